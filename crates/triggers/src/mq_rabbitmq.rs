//! RabbitMQ consumer. Metadata as KEDA's rabbitmq scaler names it: `host` (an `amqp://` URL,
//! credentials and vhost included) and `queueName` (else `--topic`); from `--secret`: `host`
//! (KEDA keeps the URL with its password in the TriggerAuthentication). Queues are declared
//! durable when absent. The message body is the message body and its headers are passed to
//! the function; responses and errors are published, persistent and confirmed by the broker,
//! to the queues named by `respTopic` and `errorTopic` through the default exchange (errors
//! with the headers `MessageSource` and `RecycleCounter`). A message is acknowledged only
//! after its outcome is confirmed; the broker redelivers unacknowledged ones when the
//! connection drops, and the consumer reconnects with a doubling backoff.

use bytes::Bytes;
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::mq::{Backoff, Handler, Message, MqDefaults, MqError, Publish, RECYCLE_COUNTER};

/// AMQP delivery mode of a message the broker keeps on disk.
const PERSISTENT: u8 = 2;

fn broker(e: impl std::fmt::Display) -> MqError {
    MqError::Broker {
        broker: "rabbitmq",
        message: e.to_string(),
    }
}

/// Consume until `stop`. Returns only for a configuration error (a broker failure is retried).
pub(crate) async fn run(
    h: Handler,
    defaults: &MqDefaults,
    stop: CancellationToken,
) -> Result<(), MqError> {
    let url = h
        .secret("host")
        .or_else(|| h.metadata("host"))
        .map(str::to_owned)
        .or_else(|| defaults.rabbitmq_url.clone())
        .ok_or_else(|| {
            MqError::Config(
                "rabbitmq trigger needs --metadata host=amqp://user:password@host:port/vhost (or the server's FISSION_MQ_RABBITMQ_URL)"
                    .to_owned(),
            )
        })?;
    if !url.starts_with("amqp://") {
        return Err(MqError::Config(format!(
            "rabbitmq host must be an amqp:// URL (amqps is not supported), not '{}'",
            redact(&url)
        )));
    }
    let queue = h.metadata("queueName").unwrap_or(&h.spec.topic).to_owned();
    tracing::info!(trigger = %h.key, host = %redact(&url), %queue, "rabbitmq consumer starting");
    let mut backoff = Backoff::new();
    loop {
        match consume(&h, &url, &queue, &stop, &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(trigger = %h.key, error = %e, "rabbitmq consumer lost its connection; reconnecting");
                h.delivery.status().set_error(&h.key, e.to_string());
                if !backoff.wait(&stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

async fn declare(ch: &Channel, queue: &str) -> Result<(), MqError> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
    .map_err(broker)
}

/// One connection; Ok only at shutdown.
async fn consume(
    h: &Handler,
    url: &str,
    queue: &str,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), MqError> {
    let conn = tokio::select! {
        () = stop.cancelled() => return Ok(()),
        c = Connection::connect(url, ConnectionProperties::default()) => c.map_err(broker)?,
    };
    let ch = conn.create_channel().await.map_err(broker)?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker)?;
    for q in [
        queue,
        h.spec.resp_topic.as_str(),
        h.spec.error_topic.as_str(),
    ] {
        if !q.is_empty() {
            declare(&ch, q).await?;
        }
    }
    let concurrency = h.concurrency();
    // The broker hands out no more unacknowledged messages than are handled at once.
    ch.basic_qos(
        u16::try_from(concurrency).unwrap_or(u16::MAX),
        BasicQosOptions::default(),
    )
    .await
    .map_err(broker)?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            format!("fission-{}-{}", h.key.namespace, h.key.name).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    backoff.reset();
    let mut handled = consumer
        .map(|d| {
            let ch = ch.clone();
            async move {
                let d = d.map_err(broker)?;
                handle_delivery(h, &ch, d, stop).await
            }
        })
        .buffer_unordered(concurrency);
    let result = loop {
        let next = tokio::select! {
            () = stop.cancelled() => break Ok(()),
            n = handled.next() => n,
        };
        match next {
            Some(Ok(())) => {}
            Some(Err(e)) => break Err(e),
            None => break Err(broker("consumer cancelled by the broker")),
        }
    };
    drop(handled);
    // Unacknowledged messages go back to the queue when the connection closes.
    let _ = conn.close(200, "bye".into()).await;
    result
}

async fn handle_delivery(
    h: &Handler,
    ch: &Channel,
    d: lapin::message::Delivery,
    stop: &CancellationToken,
) -> Result<(), MqError> {
    let mut headers = Vec::new();
    let mut recycled = 0;
    if let Some(table) = d.properties.headers() {
        for (k, v) in table.inner() {
            let v = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::LongInt(i) => i.to_string(),
                AMQPValue::LongLongInt(i) => i.to_string(),
                AMQPValue::ShortInt(i) => i.to_string(),
                // Other AMQP types have no obvious text form for an HTTP header.
                _ => continue,
            };
            if k.as_str() == RECYCLE_COUNTER {
                recycled = v.parse().unwrap_or(0);
            }
            headers.push((k.as_str().to_owned(), v));
        }
    }
    let msg = Message {
        body: Bytes::from(d.data.clone()),
        headers,
        recycled,
    };
    let Some(publish) = h.handle(msg, stop).await else {
        // Shutdown: left unacknowledged, redelivered.
        return Ok(());
    };
    match publish {
        Publish::Nothing => {}
        Publish::Response { topic, body } => send(ch, &topic, &body, FieldTable::default()).await?,
        Publish::Error {
            topic,
            body,
            headers,
        } => {
            let mut table = FieldTable::default();
            for (k, v) in headers {
                table.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
            }
            send(ch, &topic, &body, table).await?
        }
    }
    d.acker
        .ack(BasicAckOptions::default())
        .await
        .map_err(broker)?;
    Ok(())
}

/// Publish to queue `queue` (default exchange) and wait for the broker's confirmation.
async fn send(ch: &Channel, queue: &str, body: &[u8], headers: FieldTable) -> Result<(), MqError> {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_delivery_mode(PERSISTENT)
                .with_headers(headers),
        )
        .await
        .map_err(broker)?
        .await
        .map_err(broker)?;
    match confirm {
        Confirmation::Nack(_) => Err(broker(format!(
            "the broker refused the message for queue '{queue}'"
        ))),
        _ => Ok(()),
    }
}
