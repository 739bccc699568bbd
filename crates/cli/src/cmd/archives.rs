//! `fission archive` (`ar`): the archive store behind packages, with Fission's id and URL shapes
//! (`/fission/fission-functions/<id>`, `http://storagesvc.fission/v1/archive?id=<escaped id>`)
//! and output lines, so scripts written for Fission's storagesvc keep working.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use super::{Ctx, say};
use crate::api::{Wrap, storage_archive_url};
use crate::output::print_stdout;

/// What Fission strips from an id to name a downloaded file.
const ID_PREFIX: &str = "/fission/fission-functions/";

/// `fission archive` subcommands.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Upload a file as an archive
    Upload(UploadArgs),
    /// List the archives in the store
    List,
    /// Download an archive
    Download(DownloadArgs),
    /// Print the URL packages use to refer to an archive
    #[command(name = "get-url")]
    GetUrl(IdArgs),
    /// Delete an archive
    Delete(IdArgs),
}

/// `upload` flags.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Name of the archive file
    #[arg(long)]
    pub name: PathBuf,
}

/// `--id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Id of the archive
    #[arg(long)]
    pub id: String,
}

/// `download` flags.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Id of the archive
    #[arg(long)]
    pub id: String,
    /// File to write [default: the id without its /fission/fission-functions/ prefix]
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// The file `download` writes when no `--output` is given.
fn default_output(id: &str) -> anyhow::Result<PathBuf> {
    let name = id.strip_prefix(ID_PREFIX).unwrap_or(id);
    // The id comes from the user: it must not pick a path outside the current directory.
    if name.is_empty() || name.contains('/') || name == ".." || name == "." {
        bail!("cannot derive a file name from archive id '{id}'; give one with --output");
    }
    Ok(PathBuf::from(name))
}

pub(crate) async fn run(ctx: &Ctx, cmd: ArchiveCommand) -> anyhow::Result<()> {
    match cmd {
        ArchiveCommand::Upload(a) => {
            let bytes = std::fs::read(&a.name)
                .with_context(|| format!("error reading '{}'", a.name.display()))?;
            if bytes.is_empty() {
                bail!(
                    "'{}' is empty; there is nothing to upload",
                    a.name.display()
                );
            }
            let id = ctx
                .api
                .upload_archive(bytes)
                .await
                .wrap("error uploading archive")?;
            say(format!("File successfully uploaded with ID: {id}"));
        }
        ArchiveCommand::List => {
            let ids = ctx
                .api
                .list_archives()
                .await
                .wrap("error listing archives")?;
            let mut out = String::from("ARCHIVES\n");
            for id in ids {
                out.push_str(&id);
                out.push('\n');
            }
            print_stdout(out.as_bytes());
        }
        ArchiveCommand::Download(a) => {
            let output = match a.output {
                Some(o) => o,
                None => default_output(&a.id)?,
            };
            let bytes = ctx
                .api
                .get_archive(&a.id)
                .await
                .wrap("error downloading archive")?;
            std::fs::write(&output, bytes)
                .with_context(|| format!("error writing '{}'", output.display()))?;
            say(format!(
                "File download complete. File name: {}",
                output.display()
            ));
        }
        ArchiveCommand::GetUrl(a) => {
            // Only a URL for an archive that is there, as Fission checks with a HEAD first.
            ctx.api.get_archive(&a.id).await.wrap("error getting URL")?;
            say(format!("URL: {}", storage_archive_url(&a.id)));
        }
        ArchiveCommand::Delete(a) => {
            ctx.api
                .delete_archive(&a.id)
                .await
                .wrap("error deleting archive")?;
            say(format!("Deleted archive with id: {}", a.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_are_named_after_the_id_and_never_escape_the_directory() {
        assert_eq!(
            default_output("/fission/fission-functions/abc").expect("name"),
            PathBuf::from("abc")
        );
        assert_eq!(default_output("abc").expect("name"), PathBuf::from("abc"));
        assert!(default_output("/fission/fission-functions/../../etc/passwd").is_err());
        assert!(default_output("/etc/passwd").is_err());
    }
}
