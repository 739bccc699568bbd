//! NATS JetStream consumer. Metadata as KEDA's nats-jetstream scaler names it: `natsServer`
//! (a `nats://` URL), `stream` (created with `--topic` as its subject when absent),
//! `consumer` or `consumerGroup` (the durable consumer; one per trigger by default). The
//! message body is the payload, message headers are passed to the function; responses and
//! errors are published to their subjects (through JetStream when a stream captures them, so
//! the publish is confirmed, else plain NATS). Credentials from `--secret`: `token`, or
//! `user` and `password`. A message is acknowledged only after its
//! outcome is published; unacknowledged ones are redelivered by the server.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::mq::{Backoff, Handler, Message, MqDefaults, MqError, Publish, RECYCLE_COUNTER};

/// How long the server waits for an acknowledgement before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(10);

fn broker(e: impl std::fmt::Display) -> MqError {
    MqError::Broker {
        broker: "nats-jetstream",
        message: e.to_string(),
    }
}

/// Consume until `stop`. Returns only for a configuration error (a broker failure is retried).
pub(crate) async fn run(
    h: Handler,
    defaults: &MqDefaults,
    stop: CancellationToken,
) -> Result<(), MqError> {
    let server = h
        .metadata("natsServer")
        .map(str::to_owned)
        .or_else(|| defaults.nats_server.clone())
        .ok_or_else(|| {
            MqError::Config(
                "nats-jetstream trigger needs --metadata natsServer=nats://host:port (or the server's FISSION_MQ_NATS_SERVER)"
                    .to_owned(),
            )
        })?;
    let stream_name = h.metadata("stream").map_or_else(
        || format!("fission-{}", sanitize(&h.spec.topic)),
        str::to_owned,
    );
    let durable = h
        .metadata("consumer")
        .map(str::to_owned)
        .unwrap_or_else(|| sanitize(&h.consumer_group()));
    tracing::info!(trigger = %h.key, %server, stream = %stream_name, subject = %h.spec.topic, "nats jetstream consumer starting");
    let mut backoff = Backoff::new();
    loop {
        match consume(&h, &server, &stream_name, &durable, &stop, &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(trigger = %h.key, error = %e, "nats consumer failed; reconnecting");
                h.delivery.status().set_error(&h.key, e.to_string());
                if !backoff.wait(&stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Credentials from the trigger's secret: `token`, or `user` and `password`.
fn connect_options(h: &Handler) -> async_nats::ConnectOptions {
    let opts = async_nats::ConnectOptions::new();
    match (h.secret("token"), h.secret("user"), h.secret("password")) {
        (Some(t), _, _) => opts.token(t.to_owned()),
        (None, Some(u), Some(p)) => opts.user_and_password(u.to_owned(), p.to_owned()),
        _ => opts,
    }
}

/// Stream and consumer names may not contain `.`, `*`, `>` or spaces.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn consume(
    h: &Handler,
    server: &str,
    stream_name: &str,
    durable: &str,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), MqError> {
    let client = tokio::select! {
        () = stop.cancelled() => return Ok(()),
        c = connect_options(h).connect(server) => c.map_err(broker)?,
    };
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name.to_owned(),
            subjects: vec![h.spec.topic.clone()],
            ..Default::default()
        })
        .await
        .map_err(broker)?;
    let consumer = stream
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: h.spec.topic.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(broker)?;
    let messages = consumer.messages().await.map_err(broker)?;
    backoff.reset();
    let concurrency = h.concurrency();
    let mut handled = messages
        .map(|m| {
            let (js, client) = (js.clone(), client.clone());
            async move {
                let m = m.map_err(broker)?;
                handle_message(h, &js, &client, m, stop).await
            }
        })
        .buffer_unordered(concurrency);
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            n = handled.next() => n,
        };
        match next {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(broker("message stream ended")),
        }
    }
}

async fn handle_message(
    h: &Handler,
    js: &jetstream::Context,
    client: &async_nats::Client,
    m: jetstream::Message,
    stop: &CancellationToken,
) -> Result<(), MqError> {
    let mut headers = Vec::new();
    let mut recycled = 0;
    if let Some(hm) = &m.headers {
        for (k, vs) in hm.iter() {
            for v in vs {
                if AsRef::<str>::as_ref(k) == RECYCLE_COUNTER {
                    recycled = v.as_str().parse().unwrap_or(0);
                }
                headers.push((k.to_string(), v.to_string()));
            }
        }
    }
    let msg = Message {
        body: m.payload.clone(),
        headers,
        recycled,
    };
    let Some(publish) = h.handle(msg, stop).await else {
        return Ok(());
    };
    match publish {
        Publish::Nothing => {}
        Publish::Response { topic, body } => {
            send(js, client, &topic, async_nats::HeaderMap::new(), body).await?
        }
        Publish::Error {
            topic,
            body,
            headers,
        } => {
            let mut hm = async_nats::HeaderMap::new();
            for (k, v) in headers {
                hm.insert(k.as_str(), v.as_str());
            }
            send(js, client, &topic, hm, body).await?
        }
    }
    m.ack().await.map_err(broker)
}

/// Publish through JetStream (confirmed) when a stream captures `subject`; otherwise plain
/// NATS, flushed.
async fn send(
    js: &jetstream::Context,
    client: &async_nats::Client,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: Bytes,
) -> Result<(), MqError> {
    let confirmed = match js
        .publish_with_headers(subject.to_owned(), headers.clone(), body.clone())
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if confirmed {
        return Ok(());
    }
    client
        .publish_with_headers(subject.to_owned(), headers, body)
        .await
        .map_err(broker)?;
    client.flush().await.map_err(broker)
}
