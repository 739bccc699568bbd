//! Kafka consumer (Fission's default `messageQueueType`). Metadata as KEDA's kafka scaler
//! names it: `bootstrapServers` (comma-separated `host:port`), `consumerGroup` (one per
//! trigger by default); from `--secret`: `sasl` (`plaintext`) with `username` and
//! `password`. `--topic` is the topic. The message body is the record value and the record's
//! headers are passed to the function, as Fission's Kafka consumer does; responses and errors
//! are produced to their topics the same way (errors with the record headers
//! `MessageSource` and `RecycleCounter`).
//!
//! Offsets are committed only after the outcome of every message before them has been
//! produced and acknowledged by the broker (at least once). A consumer that cannot produce
//! its outcome drops its session and rejoins, so the group's committed offset brings the
//! message back. librdkafka itself reconnects to a restarted broker.

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::mq::{Backoff, Handler, Message, MqDefaults, MqError, Publish, RECYCLE_COUNTER};

/// How long a produced response may wait for the broker before the session is dropped (and
/// the message consumed again from the committed offset).
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

fn broker(e: impl std::fmt::Display) -> MqError {
    MqError::Broker {
        broker: "kafka",
        message: e.to_string(),
    }
}

/// Consume until `stop`. Returns only for a configuration error (a broker failure is retried).
pub(crate) async fn run(
    h: Handler,
    defaults: &MqDefaults,
    stop: CancellationToken,
) -> Result<(), MqError> {
    let servers = h
        .metadata("bootstrapServers")
        .map(str::to_owned)
        .or_else(|| defaults.kafka_brokers.clone())
        .ok_or_else(|| {
            MqError::Config(
                "kafka trigger needs --metadata bootstrapServers=host:port (or the server's FISSION_MQ_KAFKA_BROKERS)"
                    .to_owned(),
            )
        })?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &servers)
        // Reconnect quickly after a broker restart.
        .set("reconnect.backoff.max.ms", "2000")
        .set("topic.metadata.refresh.interval.ms", "5000");
    auth(&h, &mut config)?;
    let group = h.consumer_group();
    tracing::info!(trigger = %h.key, %servers, topic = %h.spec.topic, %group, "kafka consumer starting");
    let mut backoff = Backoff::new();
    loop {
        match consume(&h, &config, &group, &stop, &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e @ MqError::Config(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(trigger = %h.key, error = %e, "kafka consumer failed; rejoining");
                h.delivery.status().set_error(&h.key, e.to_string());
                if !backoff.wait(&stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// SASL from the trigger's secret, as KEDA's kafka TriggerAuthentication spells it.
fn auth(h: &Handler, config: &mut ClientConfig) -> Result<(), MqError> {
    match h.secret("sasl") {
        None | Some("none") => Ok(()),
        Some("plaintext") => {
            let (Some(user), Some(pw)) = (h.secret("username"), h.secret("password")) else {
                return Err(MqError::Config(
                    "kafka secret with sasl=plaintext needs username and password".to_owned(),
                ));
            };
            config
                .set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", user)
                .set("sasl.password", pw);
            Ok(())
        }
        Some(other) => Err(MqError::Config(format!(
            "kafka secret: sasl '{other}' is not supported (supported: none, plaintext)"
        ))),
    }
}

/// One group session; Ok only at shutdown.
async fn consume(
    h: &Handler,
    base: &ClientConfig,
    group: &str,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), MqError> {
    let consumer: StreamConsumer = base
        .clone()
        .set("group.id", group)
        // Committed by hand once every earlier message's outcome is produced.
        .set("enable.auto.commit", "false")
        // Records published before the trigger existed are consumed too.
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "true")
        .create()
        .map_err(|e| MqError::Config(format!("kafka consumer: {e}")))?;
    let producer: FutureProducer = base
        .clone()
        .set(
            "message.timeout.ms",
            PRODUCE_TIMEOUT.as_millis().to_string(),
        )
        // The next record waits for this answer's acknowledgement: send it at once rather
        // than after librdkafka's default 5 ms of batching.
        .set("linger.ms", "0")
        .create()
        .map_err(|e| MqError::Config(format!("kafka producer: {e}")))?;
    consumer.subscribe(&[&h.spec.topic]).map_err(broker)?;
    let concurrency = h.concurrency();
    let mut stream = consumer.stream();
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            m = stream.next() => m,
        };
        let first = match first {
            Some(Ok(m)) => m.detach(),
            // Transport hiccups (a restarting broker) come through here; librdkafka
            // reconnects by itself.
            Some(Err(e)) => {
                tracing::debug!(trigger = %h.key, error = %e, "kafka consumer error");
                continue;
            }
            None => return Err(broker("message stream ended")),
        };
        backoff.reset();
        // Whatever else is already fetched, up to the concurrency limit, handled together.
        let mut batch = vec![first];
        while batch.len() < concurrency {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => batch.push(m.detach()),
                _ => break,
            }
        }
        let results: Vec<Result<bool, MqError>> = futures::stream::iter(batch)
            .map(|m| handle_record(h, &producer, m, stop))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            if !r? {
                // Cancelled by shutdown: nothing committed, consumed again after restart.
                return Ok(());
            }
        }
        // Every record received so far has its outcome produced: commit the position.
        match consumer.commit_consumer_state(CommitMode::Async) {
            // Nothing new to commit (the batch was all redeliveries of committed records).
            Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            r => r.map_err(broker)?,
        }
    }
}

/// Handle one record; false when shutdown cancelled it.
async fn handle_record(
    h: &Handler,
    producer: &FutureProducer,
    m: OwnedMessage,
    stop: &CancellationToken,
) -> Result<bool, MqError> {
    let mut headers = Vec::new();
    let mut recycled = 0;
    if let Some(hs) = m.headers() {
        for hd in hs.iter() {
            let v = hd
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            if hd.key == RECYCLE_COUNTER {
                recycled = v.parse().unwrap_or(0);
            }
            headers.push((hd.key.to_owned(), v));
        }
    }
    let msg = Message {
        body: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        headers,
        recycled,
    };
    let Some(publish) = h.handle(msg, stop).await else {
        return Ok(false);
    };
    let key = m.key().map(<[u8]>::to_vec);
    match publish {
        Publish::Nothing => {}
        Publish::Response { topic, body } => {
            produce(producer, &topic, key.as_deref(), &body, OwnedHeaders::new()).await?
        }
        Publish::Error {
            topic,
            body,
            headers,
        } => {
            let mut hs = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in &headers {
                hs = hs.insert(Header {
                    key: k.as_str(),
                    value: Some(v.as_bytes()),
                });
            }
            produce(producer, &topic, key.as_deref(), &body, hs).await?
        }
    }
    Ok(true)
}

/// Produce and wait for the broker's acknowledgement.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    body: &[u8],
    headers: OwnedHeaders,
) -> Result<(), MqError> {
    let mut record = FutureRecord::to(topic).payload(body).headers(headers);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer
        .send(record, PRODUCE_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(e, _)| broker(format!("cannot produce to '{topic}': {e}")))
}
