//! The OpenAPI document, generated from the same kind list the router table is built from, so
//! it cannot drift from what the server serves.

use fission_core::ResourceKind;
use serde_json::{Map, Value, json};

fn error_responses() -> Value {
    json!({
        "400": {"description": "invalid input", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "not found", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "409": {"description": "name exists, conflicting write, or still in use", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "413": {"description": "body too large", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

/// Build the document.
pub(crate) fn document() -> Value {
    let ns_param = json!({"name": "namespace", "in": "query", "required": false, "schema": {"type": "string"},
        "description": "namespace; lists span all namespaces without it, other calls default to 'default'"});
    let name_param =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let mut paths = Map::new();
    for kind in ResourceKind::ALL {
        let schema = json!({"$ref": format!("#/components/schemas/{}", kind.kind_name())});
        let body = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        let mut errors = error_responses();
        paths.insert(
            format!("/v2/{}", kind.api_path()),
            json!({
                "get": {"summary": format!("List {}", kind.plural()), "parameters": [ns_param],
                        "responses": {"200": {"description": "objects", "content": {"application/json": {"schema": {"type": "array", "items": schema}}}}}},
                "post": {"summary": format!("Create a {kind}"), "parameters": [ns_param], "requestBody": body,
                         "responses": merge(json!({"201": {"description": "created; the body is the object's metadata", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ObjectMeta"}}}}}), errors.take())}
            }),
        );
        let mut errors = error_responses();
        let mut del_params = vec![name_param.clone(), ns_param.clone()];
        if matches!(kind, ResourceKind::Environment | ResourceKind::Package) {
            del_params.push(json!({"name": "force", "in": "query", "required": false, "schema": {"type": "boolean"},
                "description": "delete even if functions still use it"}));
        }
        paths.insert(
            format!("/v2/{}/{{name}}", kind.api_path()),
            json!({
                "get": {"summary": format!("Get a {kind}"), "parameters": [name_param, ns_param],
                        "responses": merge(json!({"200": {"description": "the object", "content": {"application/json": {"schema": schema}}}}), error_responses())},
                "put": {"summary": format!("Replace a {kind}; send metadata.resourceVersion for optimistic concurrency"), "parameters": [name_param, ns_param], "requestBody": body,
                        "responses": merge(json!({"200": {"description": "updated; the body is the object's metadata", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ObjectMeta"}}}}}), errors.take())},
                "delete": {"summary": format!("Delete a {kind}"), "parameters": del_params,
                           "responses": merge(json!({"200": {"description": "deleted"}}), error_responses())}
            }),
        );
    }
    paths.insert("/".into(), json!({"get": {"summary": "Server version", "responses": {"200": {"description": "version JSON"}}}}));
    paths.insert(
        "/v2/instances".into(),
        json!({"get": {"summary": "How many instances serve each function now", "parameters": [ns_param],
                       "responses": {"200": {"description": "[{namespace, name, instances}]"}}}}),
    );
    paths.insert(
        "/v2/functions/{name}/instances".into(),
        json!({"get": {"summary": "How many instances serve the function now", "parameters": [name_param, ns_param],
                       "responses": merge(json!({"200": {"description": "{namespace, name, instances}"}}), error_responses())}}),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"summary": "The server's metrics (OpenMetrics text)", "responses": {"200": {"description": "metrics"}}}}),
    );
    paths.insert(
        "/proxy/storage/v1/archive".into(),
        json!({
            "post": {"summary": "Upload an archive (raw body)", "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                     "responses": {"201": {"description": "stored", "content": {"application/json": {"schema": {"type": "object", "properties": {"id": {"type": "string"}}}}}}}},
            "delete": {"summary": "Delete an archive by id", "parameters": [{"name": "id", "in": "query", "required": true, "schema": {"type": "string"}}],
                       "responses": {"200": {"description": "deleted"}, "404": {"description": "not found"}}},
            "get": {"summary": "Download an archive by id, or list ids without one", "parameters": [{"name": "id", "in": "query", "required": false, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "archive bytes or id list"}, "404": {"description": "not found"}}}
        }),
    );
    paths.insert(
        "/v1/archive".into(),
        json!({"get": {"summary": "Download an archive by id (Fission's storagesvc path, read by executors of a split server), or list ids without one",
                       "parameters": [{"name": "id", "in": "query", "required": false, "schema": {"type": "string"}}],
                       "responses": {"200": {"description": "archive bytes or id list"}, "404": {"description": "not found"}}}}),
    );
    paths.insert(
        "/proxy/svcname".into(),
        json!({"get": {"summary": "Address of a component", "parameters": [{"name": "application", "in": "query", "required": true, "schema": {"type": "string", "enum": ["fission-router"]}}],
                       "responses": {"200": {"description": "base URL, text/plain"}}}}),
    );
    paths.insert(
        "/proxy/logs/{function}".into(),
        json!({"get": {"summary": "Function logs, one record per line", "parameters": [
                    {"name": "function", "in": "path", "required": true, "schema": {"type": "string"}}, ns_param,
                    {"name": "recordcount", "in": "query", "required": false, "schema": {"type": "integer", "default": 20}},
                    {"name": "follow", "in": "query", "required": false, "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "text/plain log lines"}, "404": {"description": "no such function"}}}}),
    );
    let mut schemas = Map::new();
    for kind in ResourceKind::ALL {
        let schema = match kind {
            ResourceKind::Secret => {
                json!({"type": "object", "required": ["metadata"], "properties": {
                "apiVersion": {"type": "string", "enum": ["v1"]},
                "kind": {"type": "string", "enum": ["Secret"]},
                "metadata": {"$ref": "#/components/schemas/ObjectMeta"},
                "data": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
                "stringData": {"type": "object", "additionalProperties": {"type": "string"}},
                "type": {"type": "string"}}})
            }
            ResourceKind::ConfigMap => {
                json!({"type": "object", "required": ["metadata"], "properties": {
                "apiVersion": {"type": "string", "enum": ["v1"]},
                "kind": {"type": "string", "enum": ["ConfigMap"]},
                "metadata": {"$ref": "#/components/schemas/ObjectMeta"},
                "data": {"type": "object", "additionalProperties": {"type": "string"}}}})
            }
            _ => json!({"type": "object", "required": ["metadata", "spec"], "properties": {
                "apiVersion": {"type": "string", "enum": [kind.api_version()]},
                "kind": {"type": "string", "enum": [kind.kind_name()]},
                "metadata": {"$ref": "#/components/schemas/ObjectMeta"},
                "spec": {"type": "object"},
                "status": {"type": "object"}}}),
        };
        schemas.insert(kind.kind_name().into(), schema);
    }
    schemas.insert(
        "ObjectMeta".into(),
        json!({"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
            "namespace": {"type": "string"}, "uid": {"type": "string"}, "resourceVersion": {"type": "string"},
            "generation": {"type": "integer"}, "creationTimestamp": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}),
    );
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": "fission-rs controller API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}
