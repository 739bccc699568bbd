use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fission_core::DEFAULT_NAMESPACE;
use fission_core::archive::{ArchiveError, archive_id_from_url, client_id};
use fission_core::resources::{AnyResource, ResourceKind, initial_build_status};
use fission_core::validation::{self, FieldErrors};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::references::{check_before_delete, check_before_write};
use crate::{Controller, apidocs};

type ApiResult<T> = Result<T, ApiError>;
type BodyResult = Result<Bytes, BytesRejection>;

/// Body-reading failures as API errors, so even a too-large body gets the JSON error shape.
fn body_or_error(body: BodyResult, limit: usize) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "request body is larger than the limit of {limit} bytes"
            ))
        } else {
            ApiError::invalid(format!(
                "cannot read request body: {}",
                rejection.body_text()
            ))
        }
    })
}

/// `?namespace=` and friends.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ItemQuery {
    namespace: Option<String>,
    #[serde(default)]
    force: Option<String>,
}

impl ItemQuery {
    fn namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    fn forced(&self) -> bool {
        matches!(self.force.as_deref(), Some("true" | "1" | "yes"))
    }
}

pub(crate) fn routes(c: Controller) -> Router {
    let mut r = Router::new()
        .route("/", get(version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route(
            "/v2/apidocs.json",
            get(|| async { Json(apidocs::document()) }),
        )
        .route(
            "/proxy/storage/v1/archive",
            get(archive_get)
                .post(archive_put)
                .delete(archive_delete)
                .layer(DefaultBodyLimit::max(c.config.max_archive_bytes)),
        )
        // Fission's storagesvc download path: executors in other processes read archives here.
        .route("/v1/archive", get(archive_get))
        .route("/proxy/svcname", get(svcname))
        .route("/v2/functions/{name}/instances", get(function_instances))
        .route("/v2/instances", get(all_instances))
        .route(
            "/proxy/logs/{function}",
            get(function_logs).post(function_logs),
        );
    for kind in ResourceKind::ALL {
        let collection = format!("/v2/{}", kind.api_path());
        let item = format!("{collection}/{{name}}");
        r = r
            .route(
                &collection,
                get(move |s: State<Controller>, q: Query<ItemQuery>| list(s, kind, q)).post(
                    move |s: State<Controller>, q: Query<ItemQuery>, b: BodyResult| {
                        create(s, kind, q, b)
                    },
                ),
            )
            .route(
                &item,
                get(
                    move |s: State<Controller>, p: Path<String>, q: Query<ItemQuery>| {
                        get_one(s, kind, p, q)
                    },
                )
                .put(
                    move |s: State<Controller>,
                          p: Path<String>,
                          q: Query<ItemQuery>,
                          b: BodyResult| update(s, kind, p, q, b),
                )
                .delete(
                    move |s: State<Controller>, p: Path<String>, q: Query<ItemQuery>| {
                        delete(s, kind, p, q)
                    },
                ),
            );
    }
    r.merge(crate::ui::routes())
        .merge(crate::stats::routes())
        .route("/v1/{*rest}", axum::routing::any(v1_gone))
        .fallback(|| async { ApiError::not_found("no such API path; see /v2/apidocs.json") })
        .layer(DefaultBodyLimit::max(c.config.max_object_bytes))
        .with_state(c)
}

async fn version() -> Json<Value> {
    Json(json!({
        "name": "fission-rs",
        "version": env!("CARGO_PKG_VERSION"),
        "apiVersion": fission_core::API_VERSION,
    }))
}

/// `{"namespace", "name", "instances"}`: how many instances serve the function now.
async fn function_instances(
    State(c): State<Controller>,
    Path(name): Path<String>,
    Query(q): Query<ItemQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let report = c
        .instances
        .clone()
        .ok_or_else(|| ApiError::not_found("this server does not report instances"))?;
    let ns = q
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(fission_core::DEFAULT_NAMESPACE);
    let count = report.instance_count(ns, &name);
    Ok(Json(
        serde_json::json!({"namespace": ns, "name": name, "instances": count}),
    ))
}

/// `[{"namespace", "name", "instances"}]` for every function (in `namespace`, if given).
async fn all_instances(
    State(c): State<Controller>,
    Query(q): Query<ItemQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let report = c
        .instances
        .clone()
        .ok_or_else(|| ApiError::not_found("this server does not report instances"))?;
    let ns = q.namespace.as_deref().filter(|n| !n.is_empty());
    let functions = c
        .store
        .list(ResourceKind::Function, ns)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(
        functions
            .iter()
            .map(|f| {
                let m = f.meta();
                serde_json::json!({"namespace": m.namespace, "name": m.name, "instances": report.instance_count(&m.namespace, &m.name)})
            })
            .collect(),
    ))
}

async fn metrics(State(c): State<Controller>) -> ApiResult<Response> {
    let render = c
        .metrics
        .clone()
        .ok_or_else(|| ApiError::not_found("this server exports no metrics"))?;
    let text = tokio::task::spawn_blocking(move || render())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn v1_gone() -> ApiError {
    ApiError::not_found(
        "Fission server supports API v2 only -- v1 is not supported. Please upgrade your Fission client/CLI.",
    )
}

/// An accepted body: the normalized object and one warning per key that was ignored.
struct Parsed {
    obj: AnyResource,
    warnings: Vec<String>,
}

/// Kubernetes' way of telling a client about ignored keys: `Warning: 299 - "<text>"` headers,
/// which `fission` prints as `Warning: <text>` on stderr.
fn with_warnings(warnings: &[String], mut resp: Response) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Turn a request body into a normalized object of `kind`, or say exactly what is wrong.
fn parse_object(kind: ResourceKind, body: &[u8], query_ns: Option<&str>) -> ApiResult<Parsed> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid(format!(
            "request body must be a {kind} object"
        )));
    }
    if let Some(k) = value
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        && !k.eq_ignore_ascii_case(kind.kind_name())
    {
        return Err(ApiError::invalid(format!(
            "body is a {k}, but this endpoint takes {kind}"
        )));
    }
    if let Some(v) = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        && v != kind.api_version()
    {
        return Err(ApiError::invalid(format!(
            "apiVersion '{v}' is not supported for {kind}: use {}",
            kind.api_version()
        )));
    }
    let decoded = fission_core::decode_object(kind, value)
        .map_err(|e| ApiError::invalid(format!("invalid {kind}: {e}")))?;
    let warnings = decoded.warnings();
    let mut obj = decoded.object;
    if let Some(ns) = query_ns.filter(|n| !n.is_empty()) {
        let m = obj.meta_mut();
        if m.namespace.is_empty() {
            m.namespace = ns.to_owned();
        } else if m.namespace != ns {
            return Err(ApiError::invalid(format!(
                "namespace '{}' in the body does not match namespace '{ns}' in the request",
                m.namespace
            )));
        }
    }
    obj.normalize();
    if let AnyResource::Package(p) = &mut obj {
        if p.status.buildstatus.is_empty() {
            let (status, log) = initial_build_status(&p.spec);
            p.status.buildstatus = status.to_owned();
            if p.status.buildlog.is_empty() {
                p.status.buildlog = log.to_owned();
            }
        }
        if p.status.last_update_timestamp.is_none() {
            p.status.last_update_timestamp =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        let mut errs = FieldErrors::default();
        validation::package_status(&p.status, &mut errs);
        errs.into_result(kind, &p.metadata.name)?;
    }
    obj.validate()?;
    if !warnings.is_empty() {
        tracing::warn!(kind = %kind, name = %obj.meta().name, ?warnings, "ignored unknown fields");
    }
    Ok(Parsed { obj, warnings })
}

async fn list(
    State(c): State<Controller>,
    kind: ResourceKind,
    Query(q): Query<ItemQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    let ns = q.namespace.as_deref().filter(|n| !n.is_empty());
    let objects = c.store.list(kind, ns).await?;
    Ok(Json(objects.iter().map(AnyResource::to_value).collect()))
}

async fn create(
    State(c): State<Controller>,
    kind: ResourceKind,
    Query(q): Query<ItemQuery>,
    body: BodyResult,
) -> ApiResult<Response> {
    let body = body_or_error(body, c.config.max_object_bytes)?;
    let Parsed { obj, warnings } = parse_object(kind, &body, q.namespace.as_deref())?;
    check_before_write(c.store.as_ref(), &obj).await?;
    check_archives(&c, &obj).await?;
    let created = c.store.create(obj).await?;
    tracing::info!(kind = %kind, namespace = %created.meta().namespace, name = %created.meta().name, "created");
    values_changed(&c, &created).await?;
    Ok(with_warnings(
        &warnings,
        (StatusCode::CREATED, Json(created.meta().clone())).into_response(),
    ))
}

async fn get_one(
    State(c): State<Controller>,
    kind: ResourceKind,
    Path(name): Path<String>,
    Query(q): Query<ItemQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        c.store.get(kind, q.namespace(), &name).await?.to_value(),
    ))
}

async fn update(
    State(c): State<Controller>,
    kind: ResourceKind,
    Path(name): Path<String>,
    Query(q): Query<ItemQuery>,
    body: BodyResult,
) -> ApiResult<Response> {
    let body = body_or_error(body, c.config.max_object_bytes)?;
    let Parsed { mut obj, warnings } = parse_object(kind, &body, Some(q.namespace()))?;
    if obj.meta().name != name {
        return Err(ApiError::invalid(format!(
            "{kind} name '{}' in the body doesn't match URL '{name}'",
            obj.meta().name
        )));
    }
    if obj.meta().namespace.is_empty() {
        obj.meta_mut().namespace = q.namespace().to_owned();
    }
    check_before_write(c.store.as_ref(), &obj).await?;
    check_archives(&c, &obj).await?;
    let updated = c.store.update(obj).await?;
    values_changed(&c, &updated).await?;
    tracing::info!(kind = %kind, namespace = %updated.meta().namespace, name = %updated.meta().name, rv = %updated.meta().resource_version, "updated");
    Ok(with_warnings(
        &warnings,
        Json(updated.meta().clone()).into_response(),
    ))
}

async fn delete(
    State(c): State<Controller>,
    kind: ResourceKind,
    Path(name): Path<String>,
    Query(q): Query<ItemQuery>,
) -> ApiResult<StatusCode> {
    let ns = q.namespace();
    // Existence first, so deleting a missing object is a 404 and not a misleading 409.
    c.store.get(kind, ns, &name).await?;
    check_before_delete(c.store.as_ref(), kind, ns, &name, q.forced()).await?;
    let deleted = c.store.delete(kind, ns, &name).await?;
    tracing::info!(kind = %kind, namespace = %ns, name = %name, "deleted");
    values_changed(&c, &deleted).await?;
    Ok(StatusCode::OK)
}

/// A package's zip archives must unpack safely: a hostile or corrupt zip is refused when the
/// package is written, not at the function's first call. Archives held elsewhere (other URLs)
/// are checked when they are fetched.
async fn check_archives(c: &Controller, obj: &AnyResource) -> ApiResult<()> {
    let AnyResource::Package(p) = obj else {
        return Ok(());
    };
    let mut checked = Vec::new();
    for (which, a) in [
        ("deployment", &p.spec.deployment),
        ("source", &p.spec.source),
    ] {
        let bytes = if !a.literal.is_empty() {
            a.literal.clone()
        } else if let Some(id) = archive_id_from_url(&a.url) {
            match c.archives.get(id).await {
                Ok(b) => b,
                // A missing id is reported where the archive is fetched, with its own message.
                Err(_) => continue,
            }
        } else {
            continue;
        };
        checked.push((which, bytes));
    }
    let name = p.metadata.name.clone();
    tokio::task::spawn_blocking(move || {
        for (which, bytes) in checked {
            if fission_unpack::is_zip(&bytes)
                && let Err(e) =
                    fission_unpack::check_zip(&bytes, fission_unpack::UnpackLimits::default())
            {
                return Err(ApiError::invalid(format!(
                    "package '{name}': the {which} archive is refused: {e}"
                )));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// A secret or config map changed: functions using it must not keep serving the old values.
async fn values_changed(c: &Controller, obj: &AnyResource) -> ApiResult<()> {
    if matches!(obj.kind(), ResourceKind::Secret | ResourceKind::ConfigMap) {
        let m = obj.meta();
        crate::references::touch_users(
            c.store.as_ref(),
            obj.kind(),
            &m.namespace,
            &m.name,
            &m.resource_version,
        )
        .await?;
    }
    Ok(())
}

async fn archive_put(State(c): State<Controller>, body: BodyResult) -> ApiResult<Response> {
    let body = body_or_error(body, c.config.max_archive_bytes)?;
    if body.is_empty() {
        return Err(ApiError::invalid("archive upload is empty"));
    }
    let id = c
        .archives
        .put(Vec::from(body))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // Fission's id shape (`/fission/fission-functions/<id>`), so scripts written for it parse it.
    Ok((StatusCode::CREATED, Json(json!({ "id": client_id(&id) }))).into_response())
}

/// The archive store's failures as API errors.
fn archive_error(e: ArchiveError) -> ApiError {
    match e {
        ArchiveError::NotFound(id) => ApiError::not_found(format!("archive '{id}' not found")),
        ArchiveError::InvalidId(id) => ApiError::invalid(format!("'{id}' is not an archive id")),
        other => ApiError::internal(other.to_string()),
    }
}

async fn archive_delete(
    State(c): State<Controller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let id = q
        .get("id")
        .cloned()
        .ok_or_else(|| ApiError::invalid("query parameter 'id' is required"))?;
    c.archives.delete(&id).await.map_err(archive_error)?;
    Ok(StatusCode::OK)
}

async fn archive_get(
    State(c): State<Controller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let Some(id) = q.get("id").cloned() else {
        let listed = c
            .archives
            .list()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let ids: Vec<String> = listed.iter().map(|a| client_id(&a.id)).collect();
        return Ok(Json(ids).into_response());
    };
    let bytes = c.archives.get(&id).await.map_err(|e| match e {
        ArchiveError::NotFound(_) => ApiError::not_found("Error retrieving item: not found"),
        other => archive_error(other),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn svcname(
    State(c): State<Controller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<String> {
    match q.get("application").map(String::as_str) {
        Some("fission-router") => Ok(c.config.router_url.clone()),
        Some(other) => Err(ApiError::not_found(format!(
            "no service for application '{other}'"
        ))),
        None => Err(ApiError::invalid(
            "query parameter 'application' is required",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    namespace: Option<String>,
    recordcount: Option<usize>,
    follow: Option<bool>,
}

async fn function_logs(
    State(c): State<Controller>,
    Path(function): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let ns = q
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if c.store
        .get(ResourceKind::Function, &ns, &function)
        .await
        .is_err()
    {
        return Err(ApiError::not_found(format!(
            "function '{function}' not found in namespace '{ns}'"
        )));
    }
    // Subscribe before reading the tail so no line falls between the two.
    let live = q
        .follow
        .unwrap_or(false)
        .then(|| c.logs.follow(&ns, &function));
    let tail = c
        .logs
        .read(&ns, &function, q.recordcount.unwrap_or(20))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let head: String = tail.iter().map(|r| format!("{r}\n")).collect();
    let Some(live) = live else {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], head).into_response());
    };
    let live = live
        .map(|r| Ok::<_, Infallible>(Bytes::from(format!("{r}\n"))))
        .take_until(c.shutdown.clone().cancelled_owned());
    let stream =
        futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(head)) }).chain(live);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}
