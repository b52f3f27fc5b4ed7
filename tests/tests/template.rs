//! What `template.yaml` promises beside its lint (`scripts/lint-template`): the alarms on
//! the delivery metrics read what the functions write (the namespace they are given, the
//! metric names of `broker::metrics`, the `Function` names each runtime passes), every
//! function has its errors alarm, and only the HTTP and WebSocket functions join the VPC,
//! with the ENI permissions only then; a fan-out page's lifetime and last receive follow the
//! queue's settings, and every delivering function may clean up after a connection that is
//! gone and hold an event back from a replaying resume; and the environment the Lambda test
//! and the cold-start benchmark run the functions with is the one the template sets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use broker::aws::TableNames;
use broker_tests::lambda::template_variables;
use serde_norway::Value;
use serde_norway::value::TaggedValue;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    serde_norway::from_str(&text).expect("template.yaml is YAML")
}

/// `!Tag value` (CloudFormation's short form), or None for anything else.
fn tagged<'a>(value: &'a Value, tag: &str) -> Option<&'a Value> {
    match value {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

fn tag(tag: &str, value: Value) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: serde_norway::value::Tag::new(tag),
        value,
    }))
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<(String, &'a Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, r)| (name.as_str().unwrap().to_owned(), r))
        .collect()
}

/// The `Function` dimension values the Lambda mains pass to `lambda_bootstrap::run` (the
/// first string of each call), which hands them to `emit_to_stdout`.
fn function_names_in_runtimes() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["graphql-api/src/runtime.rs", "publisher/src/runtime.rs"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for piece in text.split("lambda_bootstrap::run(").skip(1) {
            names.insert(piece.split('"').nth(1).unwrap().to_owned());
        }
    }
    names
}

/// The metric names `broker::metrics` writes.
fn emitted_metric_names() -> BTreeSet<String> {
    let emf = broker::metrics::InvocationMetrics::default().to_emf("ns", "f", 0);
    emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn delivery_alarms_read_the_namespace_metrics_and_functions_the_code_writes() {
    let template = template();
    let namespace =
        &template["Globals"]["Function"]["Environment"]["Variables"]["METRICS_NAMESPACE"];
    assert_eq!(
        namespace,
        &tag("Sub", string("RealtimeGraphQL/${AWS::StackName}")),
        "the functions' metrics go to one namespace per stack"
    );
    let functions: BTreeSet<String> = resources_of_type(&template, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let runtimes = function_names_in_runtimes();
    assert_eq!(
        runtimes, functions,
        "each function's metrics carry its name in the template"
    );
    let emitted = emitted_metric_names();

    let mut alarmed = BTreeSet::new();
    for (name, alarm) in resources_of_type(&template, "AWS::CloudWatch::Alarm") {
        let Some(queries) = alarm["Properties"]["Metrics"].as_sequence() else {
            continue;
        };
        let mut summed = BTreeSet::new();
        for query in queries {
            let stat = &query["MetricStat"];
            if stat.is_null() {
                continue;
            }
            let metric = &stat["Metric"];
            assert_eq!(
                &metric["Namespace"], namespace,
                "{name} reads another namespace"
            );
            let metric_name = metric["MetricName"].as_str().unwrap();
            assert!(
                emitted.contains(metric_name),
                "{name}: no metric {metric_name} is written"
            );
            alarmed.insert(metric_name.to_owned());
            let dimensions = metric["Dimensions"].as_sequence().unwrap();
            assert_eq!(
                dimensions.len(),
                1,
                "{name}: the metrics have one dimension"
            );
            assert_eq!(dimensions[0]["Name"].as_str(), Some("Function"));
            summed.insert(dimensions[0]["Value"].as_str().unwrap().to_owned());
        }
        assert_eq!(summed, runtimes, "{name} sums the metric of every function");
    }
    let wanted: BTreeSet<String> = ["Failed", "Dropped"].map(String::from).into();
    assert_eq!(alarmed, wanted, "posts lost or failed raise an alarm");
}

#[test]
fn every_function_has_an_errors_alarm_and_the_queues_and_stream_theirs() {
    let template = template();
    let alarms = resources_of_type(&template, "AWS::CloudWatch::Alarm");
    let on = |namespace: &str, metric: &str| -> Vec<&Value> {
        alarms
            .iter()
            .map(|(_, a)| &a["Properties"])
            .filter(|p| {
                p["Namespace"].as_str() == Some(namespace)
                    && p["MetricName"].as_str() == Some(metric)
            })
            .map(|p| &p["Dimensions"][0]["Value"])
            .collect()
    };
    let errors = on("AWS/Lambda", "Errors");
    for (function, _) in resources_of_type(&template, "AWS::Serverless::Function") {
        assert!(
            errors.contains(&&tag("Ref", string(&function))),
            "{function} has no errors alarm"
        );
    }
    assert_eq!(
        on("AWS/Lambda", "IteratorAge"),
        [&tag("Ref", string("StreamPublisherFunction"))]
    );
    let queues = on("AWS/SQS", "ApproximateNumberOfMessagesVisible");
    for queue in ["StreamFailureQueue", "FanoutDeadLetterQueue"] {
        assert!(
            queues.contains(&&tag("GetAtt", string(&format!("{queue}.QueueName")))),
            "{queue} has no alarm"
        );
    }
    for (name, alarm) in &alarms {
        let actions = &alarm["Properties"]["AlarmActions"];
        let branches = tagged(actions, "If").and_then(Value::as_sequence);
        assert_eq!(
            branches.map(|b| &b[0]),
            Some(&string("HasAlarmTopic")),
            "{name} notifies only when a topic is given"
        );
    }
}

#[test]
fn only_the_http_and_websocket_functions_join_the_vpc_and_get_eni_rights_only_then() {
    let template = template();
    let in_vpc: BTreeSet<&str> = ["HttpFunction", "WebSocketFunction"].into();
    for (name, function) in resources_of_type(&template, "AWS::Serverless::Function") {
        let properties = &function["Properties"];
        let vpc = &properties["VpcConfig"];
        if !in_vpc.contains(name.as_str()) {
            assert!(vpc.is_null(), "{name} stays outside the VPC");
            continue;
        }
        let branches = tagged(vpc, "If").and_then(Value::as_sequence).unwrap();
        assert_eq!(branches[0], string("InVpc"));
        assert_eq!(branches[1]["SubnetIds"], tag("Ref", string("VpcSubnetIds")));
        assert_eq!(
            branches[1]["SecurityGroupIds"],
            tag("Ref", string("VpcSecurityGroupIds"))
        );
        assert_eq!(branches[2], tag("Ref", string("AWS::NoValue")));
        // SAM adds AWSLambdaVPCAccessExecutionRole to a role it generates whenever VpcConfig
        // is present, an `!If` included: these functions bring their own role.
        assert!(
            properties["Policies"].is_null(),
            "{name} has a SAM-generated role"
        );
        let role_name = format!("{name}Role");
        assert_eq!(
            properties["Role"],
            tag("GetAtt", string(&format!("{role_name}.Arn")))
        );
        let managed = template["Resources"][role_name.as_str()]["Properties"]["ManagedPolicyArns"]
            .as_sequence()
            .unwrap();
        let vpc_policy = managed
            .iter()
            .find_map(|arn| {
                let branches = tagged(arn, "If")?.as_sequence()?;
                let policy = tagged(&branches[1], "Sub")?.as_str()?;
                policy
                    .ends_with("AWSLambdaVPCAccessExecutionRole")
                    .then_some(branches)
            })
            .unwrap_or_else(|| panic!("{name}'s role has no conditional VPC policy"));
        assert_eq!(vpc_policy[0], string("InVpc"));
        assert!(
            managed
                .iter()
                .filter_map(|a| tagged(a, "Sub")?.as_str())
                .all(|arn| !arn.contains("VPC")),
            "{name}'s role has the VPC policy unconditionally"
        );
    }
    let endpoint = &template["Resources"]["DynamoDbEndpoint"];
    assert_eq!(endpoint["Condition"], string("CreateDynamoDbEndpoint"));
    assert_eq!(endpoint["Properties"]["VpcEndpointType"], string("Gateway"));
}

#[test]
fn the_fanout_queue_and_its_dead_letter_queue_are_fifo_and_the_worker_reports_items() {
    let template = template();
    let resources = &template["Resources"];
    let queue = &resources["FanoutQueue"]["Properties"];
    assert_eq!(queue["FifoQueue"], Value::Bool(true));
    assert_eq!(queue["ContentBasedDeduplication"], Value::Bool(false));
    assert_eq!(queue["DeduplicationScope"], string("messageGroup"));
    assert_eq!(queue["FifoThroughputLimit"], string("perMessageGroupId"));
    // CloudFormation generates a `.fifo` name only when none is given; the broker tells a
    // FIFO queue by its URL's suffix.
    assert!(
        queue["QueueName"].is_null(),
        "the queue's name is generated"
    );
    assert_eq!(
        queue["RedrivePolicy"]["deadLetterTargetArn"],
        tag("GetAtt", string("FanoutDeadLetterQueue.Arn"))
    );
    let dead_letters = &resources["FanoutDeadLetterQueue"]["Properties"];
    assert_eq!(dead_letters["FifoQueue"], Value::Bool(true));
    assert!(dead_letters["QueueName"].is_null());

    let mapping = &resources["FanoutQueueMapping"]["Properties"];
    assert_eq!(
        mapping["EventSourceArn"],
        tag("GetAtt", string("FanoutQueue.Arn"))
    );
    assert_eq!(mapping["BatchSize"], Value::Number(10.into()));
    assert_eq!(
        mapping["FunctionResponseTypes"],
        Value::Sequence(vec![string("ReportBatchItemFailures")])
    );
    // A FIFO source takes no batching window.
    assert!(mapping["MaximumBatchingWindowInSeconds"].is_null());

    // The publisher is told the number of groups.
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(globals["FANOUT_GROUPS"], tag("Ref", string("FanoutGroups")));
    assert_eq!(
        template["Parameters"]["FanoutGroups"]["MinValue"],
        Value::Number(1.into())
    );
}

/// The actions a function's policies allow on `table` (`!GetAtt {table}.Arn`): the
/// function's own `Policies`, or those of the role it names.
fn actions_on(template: &Value, function: &str, table: &str) -> BTreeSet<String> {
    let arn = tag("GetAtt", string(&format!("{table}.Arn")));
    let resources = &template["Resources"];
    let properties = &resources[function]["Properties"];
    let policies = match tagged(&properties["Role"], "GetAtt") {
        Some(Value::String(role)) => {
            let role = role.trim_end_matches(".Arn");
            &resources[role]["Properties"]["Policies"]
        }
        _ => &properties["Policies"],
    };
    let mut actions = BTreeSet::new();
    for policy in policies.as_sequence().into_iter().flatten() {
        let statements = match &policy["PolicyDocument"] {
            Value::Null => &policy["Statement"],
            document => &document["Statement"],
        };
        for statement in statements.as_sequence().into_iter().flatten() {
            if statement["Resource"] != arn {
                continue;
            }
            match &statement["Action"] {
                Value::String(action) => {
                    actions.insert(action.clone());
                }
                Value::Sequence(list) => {
                    actions.extend(list.iter().filter_map(|a| a.as_str().map(str::to_owned)));
                }
                _ => {}
            }
        }
    }
    actions
}

#[test]
fn a_pages_lifetime_and_last_receive_follow_the_fanout_queue() {
    let template = template();
    let queue = &template["Resources"]["FanoutQueue"]["Properties"];
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    };
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        number(&globals["FANOUT_PAGE_LIFETIME_SECS"]),
        number(&queue["MessageRetentionPeriod"]) + number(&queue["VisibilityTimeout"]),
        "a page can be on its way for the queue's retention, and one visibility timeout more"
    );
    assert_eq!(
        number(&globals["FANOUT_MAX_RECEIVES"]),
        number(&queue["RedrivePolicy"]["maxReceiveCount"])
    );
}

/// Every function that delivers events (the stream publisher, the fan-out worker, and in
/// direct mode the HTTP and WebSocket functions) may clean up after a gone connection and
/// hold an event back from a resume still replaying.
#[test]
fn every_delivering_function_may_close_a_gone_connection_and_hold_events_back() {
    let template = template();
    let needs = |actions: &[&str]| {
        actions
            .iter()
            .map(|a| a.to_string())
            .collect::<BTreeSet<_>>()
    };
    // A 410 closes the connection: the closed mark (PutItem), its claims (Query), its
    // subscriptions and claims (BatchWriteItem), its counter (DeleteItem); the connection
    // itself on the connections table. A hold is an UpdateItem, then a GetItem when its
    // condition fails.
    let delivering = needs(&[
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:BatchWriteItem",
        "dynamodb:DeleteItem",
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
    ]);
    for function in [
        "StreamPublisherFunction",
        "FanoutWorkerFunction",
        "HttpFunction",
        "WebSocketFunction",
    ] {
        let granted = actions_on(&template, function, "SubscriptionsTable");
        assert!(granted.is_superset(&delivering), "{function}: {granted:?}");
        let connections = actions_on(&template, function, "ConnectionsTable");
        assert!(connections.contains("dynamodb:DeleteItem"), "{function}");
    }
}

/// A resume (on the WebSocket function) reads its topic's events from the log.
#[test]
fn the_websocket_function_may_read_the_event_log_for_a_resume() {
    let template = template();
    let events = actions_on(&template, "WebSocketFunction", "EventsTable");
    assert!(events.contains("dynamodb:Query"), "{events:?}");
}

#[test]
fn the_functions_environment_on_one_machine_names_only_the_templates_variables() {
    let template = template();
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    let tables = TableNames::new("connections", "subscriptions", "events");
    let variables = template_variables(&tables, "boards", "queue", "endpoint", "secret");
    assert!(!variables.is_empty());
    for (name, _) in variables {
        assert!(
            globals.get(name).is_some(),
            "{name} is not among the template's Globals variables"
        );
    }
}

#[test]
fn the_functions_that_run_mutations_may_commit_an_event_with_the_apps_writes() {
    // A commit with the app's writes is one TransactWriteItems: the event's put, the check
    // that its void mark is absent, and when no answer came in time the mark's put and the
    // event's read-back. (The app's own table is granted under the app's condition.)
    let template = template();
    for function in ["WebSocketFunction", "HttpFunction"] {
        let events = actions_on(&template, function, "EventsTable");
        for action in ["dynamodb:PutItem", "dynamodb:GetItem"] {
            assert!(events.contains(action), "{function}: {action} on events");
        }
        let subscriptions = actions_on(&template, function, "SubscriptionsTable");
        for action in ["dynamodb:PutItem", "dynamodb:ConditionCheckItem"] {
            assert!(
                subscriptions.contains(action),
                "{function}: {action} on subscriptions"
            );
        }
    }
}
