//! `fission mqtrigger|mqt …` (§3.6).

use anyhow::bail;
use clap::{Args, Subcommand};
use fission_core::resources::{
    FunctionReference, FunctionSpec, MessageQueueTrigger, MessageQueueTriggerSpec,
};

use super::{Ctx, ListArgs, SpecArgs, delete_one, get_one, print_dry, say, to_yaml};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::{OutputFormat, Table, print_structured};
use crate::util::{check_name, parse_kv_list, random_name, validate};

/// `fission mqt` subcommands.
#[derive(Debug, Subcommand)]
pub enum MqtCommand {
    /// Create a message queue trigger
    Create(MqtCreateArgs),
    /// Show a message queue trigger
    Get(MqtGetArgs),
    /// List message queue triggers
    List(ListArgs),
    /// Update a message queue trigger
    Update(MqtUpdateArgs),
    /// Delete a message queue trigger
    Delete(MqtDeleteArgs),
}

/// `mqt create` flags.
#[derive(Debug, Args)]
pub struct MqtCreateArgs {
    /// Trigger name (a UUID is generated when omitted)
    #[arg(long)]
    pub name: Option<String>,
    /// Function to call
    #[arg(long)]
    pub function: Option<String>,
    /// Message queue type (kafka, rabbitmq, aws-sqs-queue, …)
    #[arg(long, default_value = "kafka")]
    pub mqtype: String,
    /// Trigger kind: keda or fission
    #[arg(long, default_value = "keda")]
    pub mqtkind: String,
    /// Topic to consume
    #[arg(long)]
    pub topic: Option<String>,
    /// Topic to publish responses to
    #[arg(long)]
    pub resptopic: Option<String>,
    /// Topic to publish errors to
    #[arg(long)]
    pub errortopic: Option<String>,
    /// Retries after a failed call
    #[arg(long, default_value_t = 0)]
    pub maxretries: i32,
    /// Content type of messages
    #[arg(long, short = 'c', default_value = "application/json")]
    pub contenttype: String,
    /// KEDA polling interval (seconds)
    #[arg(long, default_value_t = 30)]
    pub pollinginterval: i32,
    /// KEDA cooldown period (seconds)
    #[arg(long, default_value_t = 300)]
    pub cooldownperiod: i32,
    /// KEDA minimum replicas
    #[arg(long, default_value_t = 0)]
    pub minreplicacount: i32,
    /// KEDA maximum replicas
    #[arg(long, default_value_t = 100)]
    pub maxreplicacount: i32,
    /// Connector metadata k=v (repeatable)
    #[arg(long)]
    pub metadata: Vec<String>,
    /// Secret with connector credentials
    #[arg(long)]
    pub secret: Option<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// `mqt get` flags.
#[derive(Debug, Args)]
pub struct MqtGetArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `mqt update` flags.
#[derive(Debug, Args)]
pub struct MqtUpdateArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Function to call
    #[arg(long)]
    pub function: Option<String>,
    /// Topic to consume
    #[arg(long)]
    pub topic: Option<String>,
    /// Topic to publish responses to
    #[arg(long)]
    pub resptopic: Option<String>,
    /// Topic to publish errors to
    #[arg(long)]
    pub errortopic: Option<String>,
    /// Retries after a failed call
    #[arg(long)]
    pub maxretries: Option<i32>,
    /// Content type of messages
    #[arg(long, short = 'c')]
    pub contenttype: Option<String>,
    /// KEDA polling interval (seconds)
    #[arg(long)]
    pub pollinginterval: Option<i32>,
    /// KEDA cooldown period (seconds)
    #[arg(long)]
    pub cooldownperiod: Option<i32>,
    /// KEDA minimum replicas
    #[arg(long)]
    pub minreplicacount: Option<i32>,
    /// KEDA maximum replicas
    #[arg(long)]
    pub maxreplicacount: Option<i32>,
    /// Connector metadata k=v (repeatable; merged)
    #[arg(long)]
    pub metadata: Vec<String>,
    /// Secret with connector credentials
    #[arg(long)]
    pub secret: Option<String>,
}

/// `mqt delete` flags.
#[derive(Debug, Args)]
pub struct MqtDeleteArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Do not fail when the trigger does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

pub(crate) async fn run(ctx: &Ctx, cmd: MqtCommand) -> anyhow::Result<()> {
    match cmd {
        MqtCommand::Create(a) => create(ctx, a).await,
        MqtCommand::Get(a) => get(ctx, a).await,
        MqtCommand::List(a) => list(ctx, a).await,
        MqtCommand::Update(a) => update(ctx, a).await,
        MqtCommand::Delete(a) => delete(ctx, a).await,
    }
}

pub(crate) fn build(
    ns: &str,
    name: &str,
    a: &MqtCreateArgs,
) -> anyhow::Result<MessageQueueTrigger> {
    let Some(function) = a.function.as_deref().filter(|f| !f.is_empty()) else {
        bail!("need --function argument");
    };
    let Some(topic) = a.topic.as_deref().filter(|t| !t.is_empty()) else {
        bail!("topic cannot be empty")
    };
    let metadata = parse_kv_list(&a.metadata, "metadata")?;
    let spec = MessageQueueTriggerSpec {
        functionref: FunctionReference::by_name(function),
        message_queue_type: a.mqtype.clone(),
        topic: topic.to_owned(),
        resp_topic: a.resptopic.clone().unwrap_or_default(),
        error_topic: a.errortopic.clone().unwrap_or_default(),
        max_retries: a.maxretries,
        content_type: a.contenttype.clone(),
        polling_interval: Some(a.pollinginterval),
        cooldown_period: Some(a.cooldownperiod),
        min_replica_count: Some(a.minreplicacount),
        max_replica_count: Some(a.maxreplicacount),
        metadata: if metadata.is_empty() {
            None
        } else {
            Some(metadata)
        },
        secret: a.secret.clone().unwrap_or_default(),
        mqtkind: a.mqtkind.clone(),
        podspec: None,
    };
    Ok(MessageQueueTrigger::new(ns, name, spec))
}

async fn create(ctx: &Ctx, a: MqtCreateArgs) -> anyhow::Result<()> {
    let dry = a.spec.dry_run()?;
    let ns = ctx.ns(NsKind::Trigger);
    let name = a.name.clone().unwrap_or_else(random_name);
    check_name::<MessageQueueTriggerSpec>(&ns, &name)?;
    let t = build(&ns, &name, &a)?;
    validate(&t)?;
    if dry {
        return print_dry(&[to_yaml(&t)?]);
    }
    if ctx
        .api
        .get_opt::<FunctionSpec>(&ns, &t.spec.functionref.name)
        .await
        .wrap("error creating message queue trigger")?
        .is_none()
    {
        ctx.warn(format!(
            "function '{}' does not exist in namespace '{ns}'",
            t.spec.functionref.name
        ));
    }
    ctx.api
        .create(&t)
        .await
        .wrap("error creating message queue trigger")?;
    say(format!("trigger '{name}' created"));
    super::warn_mq_type_not_consumed(ctx, &t.spec.message_queue_type);
    Ok(())
}

pub(crate) fn mqt_table(ts: &[MessageQueueTrigger]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "FUNCTION_NAME",
        "MESSAGE_QUEUE_TYPE",
        "TOPIC",
        "RESPONSE_TOPIC",
        "ERROR_TOPIC",
        "MAX_RETRIES",
        "PUB_MSG_CONTENT_TYPE",
        "NAMESPACE",
    ]);
    for m in ts {
        t.row(vec![
            m.metadata.name.clone(),
            m.spec.functionref.name.clone(),
            m.spec.message_queue_type.clone(),
            m.spec.topic.clone(),
            m.spec.resp_topic.clone(),
            m.spec.error_topic.clone(),
            m.spec.max_retries.to_string(),
            m.spec.content_type.clone(),
            m.metadata.namespace.clone(),
        ]);
    }
    t
}

async fn get(ctx: &Ctx, a: MqtGetArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    let t: MessageQueueTrigger = get_one(ctx, &ns, &a.name, "message queue trigger").await?;
    if let Some(f) = a.output {
        return print_structured(f, &t);
    }
    mqt_table(&[t]).print();
    super::timetrigger::print_trigger_status(ctx, "messagequeue", &ns, &a.name).await
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let scope = a.scope(ctx, NsKind::Trigger);
    let ts: Vec<MessageQueueTrigger> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing message queue triggers")?;
    if let Some(f) = a.output {
        return print_structured(f, &ts);
    }
    mqt_table(&ts).print();
    Ok(())
}

async fn update(ctx: &Ctx, a: MqtUpdateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    let mut t: MessageQueueTrigger = get_one(ctx, &ns, &a.name, "message queue trigger").await?;
    let s = &mut t.spec;
    if let Some(f) = &a.function {
        s.functionref = FunctionReference::by_name(f);
    }
    if let Some(v) = &a.topic {
        s.topic = v.clone();
    }
    if let Some(v) = &a.resptopic {
        s.resp_topic = v.clone();
    }
    if let Some(v) = &a.errortopic {
        s.error_topic = v.clone();
    }
    if let Some(v) = a.maxretries {
        s.max_retries = v;
    }
    if let Some(v) = &a.contenttype {
        s.content_type = v.clone();
    }
    if let Some(v) = a.pollinginterval {
        s.polling_interval = Some(v);
    }
    if let Some(v) = a.cooldownperiod {
        s.cooldown_period = Some(v);
    }
    if let Some(v) = a.minreplicacount {
        s.min_replica_count = Some(v);
    }
    if let Some(v) = a.maxreplicacount {
        s.max_replica_count = Some(v);
    }
    let md = parse_kv_list(&a.metadata, "metadata")?;
    if !md.is_empty() {
        s.metadata.get_or_insert_with(Default::default).extend(md);
    }
    if let Some(v) = &a.secret {
        s.secret = v.clone();
    }
    validate(&t)?;
    ctx.api
        .update(&t)
        .await
        .wrap("error updating message queue trigger")?;
    say(format!("trigger '{}' updated", a.name));
    Ok(())
}

async fn delete(ctx: &Ctx, a: MqtDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    if delete_one::<MessageQueueTriggerSpec>(
        ctx,
        &ns,
        &a.name,
        a.ignorenotfound,
        false,
        "message queue trigger",
    )
    .await?
    {
        say(format!("trigger '{}' deleted", a.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: MqtCommand,
    }

    fn create_args(argv: &[&str]) -> MqtCreateArgs {
        let mut full = vec!["t", "create"];
        full.extend_from_slice(argv);
        match T::try_parse_from(full).expect("parse").c {
            MqtCommand::Create(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn mq_trigger_gets_fission_cli_defaults() {
        let a = create_args(&[
            "--name",
            "orders",
            "--function",
            "hello",
            "--topic",
            "orders",
            "--metadata",
            "bootstrapServers=kafka:9092",
        ]);
        let t = build("default", "orders", &a).expect("mqt");
        let v = serde_json::to_value(&t.spec).expect("json");
        assert_eq!(v["mqtkind"], "keda");
        assert_eq!(v["messageQueueType"], "kafka");
        assert_eq!(v["contentType"], "application/json");
        assert_eq!(
            (v["pollingInterval"].as_i64(), v["cooldownPeriod"].as_i64()),
            (Some(30), Some(300))
        );
        assert_eq!(
            (v["minReplicaCount"].as_i64(), v["maxReplicaCount"].as_i64()),
            (Some(0), Some(100))
        );
        assert_eq!(v["metadata"]["bootstrapServers"], "kafka:9092");
        validate(&t).expect("valid");
    }

    #[test]
    fn mq_trigger_needs_a_topic_different_from_the_response_topic() {
        let e = build("default", "x", &create_args(&["--function", "f"])).expect_err("must fail");
        assert_eq!(e.to_string(), "topic cannot be empty");
        let t = build(
            "default",
            "x",
            &create_args(&["--function", "f", "--topic", "a", "--resptopic", "a"]),
        )
        .expect("t");
        assert!(
            validate(&t)
                .expect_err("must fail")
                .to_string()
                .contains("listen topic should not equal to response topic")
        );
    }
}
