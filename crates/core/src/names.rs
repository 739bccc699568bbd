/// Whether `s` is an RFC 1123 label: at most 63 characters of `[a-z0-9-]`, starting and ending
/// with an alphanumeric. Fission (through Kubernetes) requires this of object names.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Whether `s` is an RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_names_with_dashes() {
        assert!(is_dns1123_label("hello"));
        assert!(is_dns1123_label("hello-world-2"));
        assert!(is_dns1123_label(&"a".repeat(63)));
    }

    #[test]
    fn rejects_names_kubernetes_would_reject() {
        for bad in [
            "",
            "Hello",
            "-a",
            "a-",
            "a_b",
            "../x",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(!is_dns1123_label(bad), "{bad:?} accepted");
        }
        assert!(is_dns1123_subdomain("example.com"));
        assert!(!is_dns1123_subdomain("Example.com"));
    }
}
