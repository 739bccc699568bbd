//! `fission version`: the client version, then the server's `GET /` document, as YAML.

use serde_json::json;

use super::Ctx;
use crate::api::Wrap;
use crate::output::print_stdout;

pub(crate) async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let client = json!({ "client": { "fission/core": { "Version": env!("CARGO_PKG_VERSION") } } });
    print_stdout(serde_norway::to_string(&client)?.as_bytes());
    let server = ctx
        .api
        .server_version()
        .await
        .wrap("error getting the server version")?;
    print_stdout(serde_norway::to_string(&json!({ "server": server }))?.as_bytes());
    Ok(())
}
