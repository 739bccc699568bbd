//! Message-queue triggers: one consumer task per MessageQueueTrigger, inside the server, for
//! both `mqtkind: fission` and `mqtkind: keda` objects (there is no KEDA locally: the same
//! consumers serve them).
//!
//! Each message is POSTed to the function with Fission's headers and retried up to
//! `maxRetries` more times while the function fails; the answer goes to `respTopic`, a final
//! failure to `errorTopic` (with `MessageSource` and `RecycleCounter`). A message is
//! acknowledged only after that outcome has been published, so a crash or a broker restart
//! in between delivers it again (at least once) and nothing is dropped silently. Consumers
//! reconnect with a doubling backoff when the broker goes away.

use std::time::Duration;

use bytes::Bytes;
use fission_core::resources::MessageQueueTriggerSpec;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Call, Delivery, RetryPolicy, TriggerKey, TriggerKind};
use crate::registry::TriggerTasks;

/// Header naming the topic a message came from.
pub const TOPIC_HEADER: &str = "X-Fission-MQTrigger-Topic";
/// Header naming the response topic.
pub const RESP_TOPIC_HEADER: &str = "X-Fission-MQTrigger-RespTopic";
/// Header naming the error topic.
pub const ERROR_TOPIC_HEADER: &str = "X-Fission-MQTrigger-ErrorTopic";
/// Error-topic header: the topic the failed message came from.
pub const MESSAGE_SOURCE: &str = "MessageSource";
/// Error-topic header: how many times the message has been through the error topic.
pub const RECYCLE_COUNTER: &str = "RecycleCounter";

/// The `messageQueueType`s this server consumes.
const SUPPORTED: [&str; 4] = ["kafka", "rabbitmq", "redis", "nats-jetstream"];

/// Server-wide broker addresses, used when a trigger's `--metadata` names none.
#[derive(Debug, Clone, Default)]
pub struct MqDefaults {
    /// Redis address (`host:port` or a `redis://` URL); env `FISSION_MQ_REDIS_ADDRESS`.
    pub redis_address: Option<String>,
    /// NATS server URL (`nats://host:port`); env `FISSION_MQ_NATS_SERVER`.
    pub nats_server: Option<String>,
    /// Kafka bootstrap servers (`host:port,…`); env `FISSION_MQ_KAFKA_BROKERS`.
    pub kafka_brokers: Option<String>,
    /// RabbitMQ URL (`amqp://user:password@host:port/vhost`); env `FISSION_MQ_RABBITMQ_URL`.
    pub rabbitmq_url: Option<String>,
}

impl MqDefaults {
    /// From the environment.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            redis_address: var("FISSION_MQ_REDIS_ADDRESS"),
            nats_server: var("FISSION_MQ_NATS_SERVER"),
            kafka_brokers: var("FISSION_MQ_KAFKA_BROKERS"),
            rabbitmq_url: var("FISSION_MQ_RABBITMQ_URL"),
        }
    }
}

/// Why a trigger's consumer cannot run.
#[derive(Debug, thiserror::Error)]
pub enum MqError {
    /// The broker type has no consumer here.
    #[error(
        "message queue type '{0}' is not supported by this server (supported: kafka, rabbitmq, redis, nats-jetstream); the trigger is not served"
    )]
    Unsupported(String),
    /// A required setting is missing.
    #[error("{0}")]
    Config(String),
    /// The broker failed.
    #[error("{broker}: {message}")]
    Broker {
        /// Which broker.
        broker: &'static str,
        /// What failed.
        message: String,
    },
}

/// A message taken from a broker.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) body: Bytes,
    /// Headers the message carried (passed on to the function).
    pub(crate) headers: Vec<(String, String)>,
    /// The `RecycleCounter` it carried, if any.
    pub(crate) recycled: u32,
}

/// What to publish for a handled message (then acknowledge it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Publish {
    /// Nothing to publish.
    Nothing,
    /// The function's answer, to the response topic.
    Response { topic: String, body: Bytes },
    /// The last failure, to the error topic.
    Error {
        topic: String,
        body: Bytes,
        headers: Vec<(String, String)>,
    },
}

/// Everything a consumer needs to handle a message.
#[derive(Clone)]
pub(crate) struct Handler {
    pub(crate) delivery: Delivery,
    pub(crate) key: TriggerKey,
    pub(crate) spec: MessageQueueTriggerSpec,
    /// The values of the trigger's `--secret` (credentials), as KEDA's TriggerAuthentication
    /// hands them to the scaler.
    pub(crate) secrets: std::collections::BTreeMap<String, String>,
}

impl Handler {
    /// Call the function for `msg` (with retries) and say what to publish.
    pub(crate) async fn handle(&self, msg: Message, stop: &CancellationToken) -> Option<Publish> {
        let mut headers = msg.headers;
        headers.push((TOPIC_HEADER.to_owned(), self.spec.topic.clone()));
        headers.push((RESP_TOPIC_HEADER.to_owned(), self.spec.resp_topic.clone()));
        headers.push((ERROR_TOPIC_HEADER.to_owned(), self.spec.error_topic.clone()));
        headers.push(("Content-Type".to_owned(), self.spec.content_type.clone()));
        let call = Call {
            method: reqwest::Method::POST,
            namespace: self.key.namespace.clone(),
            function: self.spec.functionref.name.clone(),
            subpath: String::new(),
            headers,
            body: msg.body,
        };
        let policy = RetryPolicy {
            max_attempts: u32::try_from(self.spec.max_retries.max(0))
                .unwrap_or(0)
                .saturating_add(1),
            first_backoff: Duration::from_millis(100),
            retry_on_status: true,
        };
        self.delivery.fired(&self.key);
        let outcome = self.delivery.deliver(&self.key, &call, policy, stop).await;
        let failure = match outcome {
            Ok(a) if a.is_success() => {
                return Some(if self.spec.resp_topic.is_empty() {
                    Publish::Nothing
                } else {
                    Publish::Response {
                        topic: self.spec.resp_topic.clone(),
                        body: a.body,
                    }
                });
            }
            Ok(a) => format!(
                "request returned failure: {}, body: {}",
                a.status,
                String::from_utf8_lossy(&a.body).trim()
            ),
            // Shutdown: leave the message unacknowledged; it comes back after the restart.
            Err(crate::DeliveryError::Cancelled { .. }) => return None,
            Err(e) => e.to_string(),
        };
        Some(if self.spec.error_topic.is_empty() {
            Publish::Nothing
        } else {
            Publish::Error {
                topic: self.spec.error_topic.clone(),
                body: Bytes::from(failure),
                headers: vec![
                    (MESSAGE_SOURCE.to_owned(), self.spec.topic.clone()),
                    (RECYCLE_COUNTER.to_owned(), (msg.recycled + 1).to_string()),
                ],
            }
        })
    }

    /// Messages handled at once (metadata `concurrency`, default 1: in order).
    pub(crate) fn concurrency(&self) -> usize {
        self.metadata("concurrency")
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|c| *c > 0)
            .unwrap_or(1)
    }

    /// A credential from the trigger's secret.
    pub(crate) fn secret(&self, k: &str) -> Option<&str> {
        self.secrets
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn metadata(&self, k: &str) -> Option<&str> {
        self.spec
            .metadata
            .as_ref()
            .and_then(|m| m.get(k))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The consumer group: metadata `consumerGroup`, else one per trigger.
    pub(crate) fn consumer_group(&self) -> String {
        self.metadata("consumerGroup").map_or_else(
            || format!("fission-{}-{}", self.key.namespace, self.key.name),
            str::to_owned,
        )
    }
}

/// Pauses between reconnection attempts.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(Duration::from_millis(100))
    }
    pub(crate) fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
    /// Wait; false when `stop` was cancelled meanwhile.
    pub(crate) async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }
}

/// Broker consumers for the [`Registry`](crate::registry::Registry).
pub(crate) struct MqTasks {
    pub(crate) store: std::sync::Arc<dyn fission_core::ResourceStore>,
    pub(crate) delivery: Delivery,
    pub(crate) defaults: MqDefaults,
}

impl TriggerTasks for MqTasks {
    type Spec = MessageQueueTriggerSpec;
    const KIND: TriggerKind = TriggerKind::MessageQueueTrigger;

    fn start(
        &self,
        key: TriggerKey,
        spec: &MessageQueueTriggerSpec,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let mut handler = Handler {
            delivery: self.delivery.clone(),
            key,
            spec: spec.clone(),
            secrets: Default::default(),
        };
        let mqtype = spec.message_queue_type.clone();
        if !SUPPORTED.contains(&mqtype.as_str()) {
            refuse(&handler, &MqError::Unsupported(mqtype));
            return None;
        }
        let (defaults, store) = (self.defaults.clone(), self.store.clone());
        Some(tokio::spawn(async move {
            if !handler.spec.secret.is_empty() {
                match load_secret(store.as_ref(), &handler.key.namespace, &handler.spec.secret)
                    .await
                {
                    Ok(s) => handler.secrets = s,
                    Err(e) => return refuse(&handler, &e),
                }
            }
            let run = match mqtype.as_str() {
                "kafka" => crate::mq_kafka::run(handler.clone(), &defaults, stop).await,
                "rabbitmq" => crate::mq_rabbitmq::run(handler.clone(), &defaults, stop).await,
                "redis" => crate::mq_redis::run(handler.clone(), &defaults, stop).await,
                _ => crate::mq_nats::run(handler.clone(), &defaults, stop).await,
            };
            if let Err(e) = run {
                refuse(&handler, &e);
            }
        }))
    }
}

/// The values of Secret `name` (a credential change needs a trigger update to apply, as in
/// KEDA, where the connector reads its secret at start).
async fn load_secret(
    store: &dyn fission_core::ResourceStore,
    namespace: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>, MqError> {
    match store
        .get(fission_core::ResourceKind::Secret, namespace, name)
        .await
    {
        Ok(fission_core::AnyResource::Secret(s)) => Ok(s
            .data
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()),
        Ok(_) | Err(fission_core::StoreError::NotFound { .. }) => Err(MqError::Config(format!(
            "secret '{name}' not found in namespace '{namespace}'"
        ))),
        Err(e) => Err(MqError::Config(format!("cannot read secret '{name}': {e}"))),
    }
}

/// A trigger that cannot be served: said in the log and in its status.
fn refuse(h: &Handler, e: &MqError) {
    tracing::warn!(trigger = %h.key, error = %e, "message queue trigger not served");
    h.delivery.status().set_error(&h.key, e.to_string());
}
