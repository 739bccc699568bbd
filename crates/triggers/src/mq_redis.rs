//! Redis Streams consumer. Metadata as KEDA's redis-streams scaler names it: `address`
//! (`host:port` or a `redis://` URL), `consumerGroup`; from `--secret`: `password` (and
//! `username`); `--topic` is the stream. The message
//! body is the entry's field `body`; responses and errors are added to their streams the same
//! way (errors also carry the fields `MessageSource` and `RecycleCounter`). Entries are read
//! with XREADGROUP and acknowledged (XACK) only after their outcome is published; after a
//! reconnect the consumer first re-reads its own unacknowledged entries.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use tokio_util::sync::CancellationToken;

use crate::mq::{Backoff, Handler, Message, MqDefaults, MqError, Publish, RECYCLE_COUNTER};

/// The consumer name inside the group: one consumer per trigger, so the entries it left
/// unacknowledged are its own to re-read after a reconnect.
const CONSUMER: &str = "fission";
/// How long one XREADGROUP waits for entries.
const BLOCK_MS: u64 = 1000;
/// Entries read at once.
const BATCH: usize = 32;

fn broker(e: impl std::fmt::Display) -> MqError {
    MqError::Broker {
        broker: "redis",
        message: e.to_string(),
    }
}

/// Percent-encode a URL userinfo part.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Consume until `stop`. Returns only for a configuration error (a broker failure is retried).
pub(crate) async fn run(
    h: Handler,
    defaults: &MqDefaults,
    stop: CancellationToken,
) -> Result<(), MqError> {
    let address = h
        .metadata("address")
        .map(str::to_owned)
        .or_else(|| defaults.redis_address.clone())
        .ok_or_else(|| {
            MqError::Config(
                "redis trigger needs --metadata address=host:port (or the server's FISSION_MQ_REDIS_ADDRESS)"
                    .to_owned(),
            )
        })?;
    let url = match (address.contains("://"), h.secret("password")) {
        (true, _) => address,
        (false, Some(pw)) => format!(
            "redis://{}:{}@{address}",
            h.secret("username").unwrap_or(""),
            url_escape(pw)
        ),
        (false, None) => format!("redis://{address}"),
    };
    let client = redis::Client::open(url.as_str())
        .map_err(|e| MqError::Config(format!("invalid redis address {url}: {e}")))?;
    let group = h.consumer_group();
    tracing::info!(trigger = %h.key, stream = %h.spec.topic, %group, "redis stream consumer starting");
    let mut backoff = Backoff::new();
    loop {
        match consume(&h, &client, &group, &stop, &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(trigger = %h.key, error = %e, "redis consumer lost its connection; reconnecting");
                h.delivery.status().set_error(&h.key, e.to_string());
                if !backoff.wait(&stop).await {
                    return Ok(());
                }
            }
        }
    }
}

async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, MqError> {
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(broker)?;
    // Reads block for BLOCK_MS; the client's default 500 ms response timeout would cut them.
    con.set_response_timeout(Duration::from_millis(BLOCK_MS) + Duration::from_secs(10));
    Ok(con)
}

/// One connected session; Ok only at shutdown.
async fn consume(
    h: &Handler,
    client: &redis::Client,
    group: &str,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), MqError> {
    let mut reader = connect(client).await?;
    let mut writer = connect(client).await?;
    // From "0": entries added before the trigger existed are consumed too.
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&h.spec.topic)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut writer)
        .await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(broker(e));
    }
    backoff.reset();
    // First our own pending entries (delivered before a disconnect, never acknowledged).
    let mut from = "0";
    loop {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(CONSUMER)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&h.spec.topic)
            .arg(from);
        let read = cmd.query_async::<Option<StreamReadReply>>(&mut reader);
        let reply = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = read => r.map_err(broker)?,
        };
        let entries: Vec<_> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if entries.is_empty() {
            from = ">";
            continue;
        }
        let results: Vec<Result<(), MqError>> = futures::stream::iter(entries)
            .map(|entry| {
                let mut writer = writer.clone();
                async move { handle_entry(h, group, entry, &mut writer, stop).await }
            })
            .buffer_unordered(h.concurrency())
            .collect()
            .await;
        for r in results {
            r?;
        }
        if stop.is_cancelled() {
            return Ok(());
        }
    }
}

async fn handle_entry(
    h: &Handler,
    group: &str,
    entry: redis::streams::StreamId,
    writer: &mut MultiplexedConnection,
    stop: &CancellationToken,
) -> Result<(), MqError> {
    let field = |k: &str| {
        entry
            .map
            .get(k)
            .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok())
    };
    let msg = Message {
        body: Bytes::from(field("body").unwrap_or_default()),
        headers: Vec::new(),
        recycled: field(RECYCLE_COUNTER)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    let Some(publish) = h.handle(msg, stop).await else {
        return Ok(());
    };
    match publish {
        Publish::Nothing => {}
        Publish::Response { topic, body } => {
            redis::cmd("XADD")
                .arg(&topic)
                .arg("*")
                .arg("body")
                .arg(body.as_ref())
                .query_async::<String>(writer)
                .await
                .map_err(broker)?;
        }
        Publish::Error {
            topic,
            body,
            headers,
        } => {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&topic).arg("*").arg("body").arg(body.as_ref());
            for (k, v) in &headers {
                cmd.arg(k).arg(v);
            }
            cmd.query_async::<String>(writer).await.map_err(broker)?;
        }
    }
    redis::cmd("XACK")
        .arg(&h.spec.topic)
        .arg(group)
        .arg(&entry.id)
        .query_async::<i64>(writer)
        .await
        .map_err(broker)?;
    Ok(())
}
