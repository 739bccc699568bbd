//! Fission's fetcher request shapes (`pkg/fetcher/types.go`), key for key. Go marshals empty
//! slices as `null`, so every list accepts it.

use fission_core::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize};

/// `fetchType`: the package's source archive.
pub const FETCH_SOURCE: i32 = 0;
/// `fetchType`: the package's deployment archive.
pub const FETCH_DEPLOYMENT: i32 = 1;
/// `fetchType`: a raw URL.
pub const FETCH_URL: i32 = 2;

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Secret or ConfigMap the function reads (`{namespace, name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueRef {
    /// Its namespace.
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    /// Its name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
}

/// `FunctionFetchRequest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchRequest {
    /// [`FETCH_SOURCE`], [`FETCH_DEPLOYMENT`] or [`FETCH_URL`].
    #[serde(rename = "fetchType", default)]
    pub fetch_type: i32,
    /// The package (name, namespace, resourceVersion).
    #[serde(default, deserialize_with = "nullable")]
    pub package: ObjectMeta,
    /// For [`FETCH_URL`].
    #[serde(default, deserialize_with = "nullable")]
    pub url: String,
    /// The archive service's address (unused here: the controller serves archives).
    #[serde(default, deserialize_with = "nullable")]
    pub storagesvcurl: String,
    /// Name of the result inside the shared directory.
    #[serde(default, deserialize_with = "nullable")]
    pub filename: String,
    /// Secrets to write under the secrets directory.
    #[serde(rename = "secretList", default, deserialize_with = "nullable")]
    pub secret_list: Vec<ValueRef>,
    /// ConfigMaps to write under the config maps directory.
    #[serde(rename = "configMapList", default, deserialize_with = "nullable")]
    pub config_map_list: Vec<ValueRef>,
    /// Keep a zip as the file instead of unpacking it.
    #[serde(default)]
    pub keeparchive: bool,
}

/// `FunctionSpecializeRequest` (the two keys are capitalised: Go fields without json tags).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecializeRequest {
    /// What to fetch.
    #[serde(rename = "FetchReq")]
    pub fetch_req: FetchRequest,
    /// Passed to the runtime as is (`filepath`, `functionName`, `FunctionMetadata`, …).
    #[serde(rename = "LoadReq")]
    pub load_req: serde_json::Value,
}

/// `ArchiveUploadRequest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadRequest {
    /// File under the shared directory.
    #[serde(default)]
    pub filename: String,
    /// Where to upload.
    #[serde(default)]
    pub storagesvcurl: String,
    /// Zip it first.
    #[serde(default)]
    pub archivepackage: bool,
}

/// `ArchiveUploadResponse`: where the uploaded archive is and its checksum.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadResponse {
    /// The archive's storagesvc URL (`http://storagesvc.fission/v1/archive?id=…`).
    #[serde(rename = "archiveDownloadUrl", default)]
    pub archive_download_url: String,
    /// Its sha256.
    #[serde(default)]
    pub checksum: fission_core::resources::Checksum,
}
