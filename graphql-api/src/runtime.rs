//! Wiring for the Lambda functions: adapters from the environment the SAM template sets.

use std::sync::Arc;

use broker::aws::{
    ApiGatewayConnectionGateway, DynamoDbConnectionStore, DynamoDbEventLog,
    DynamoDbSubscriptionStore, SqsFanoutQueue, TableNames, sdk_config,
};
use broker::{AuthConfig, Authenticator, Broker, BrokerConfig, FanoutQueue, Ports};

use crate::app::build_schema;
use crate::app::dynamodb::DynamoDbBoardStore;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn required(name: &str) -> Result<String, Error> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("environment variable {name} is not set").into())
}

/// The broker on DynamoDB and the Management API, configured from the environment:
/// `CONNECTIONS_TABLE`, `SUBSCRIPTIONS_TABLE`, `EVENTS_TABLE`, `APP_TABLE`,
/// `MANAGEMENT_ENDPOINT`, `JWT_SECRET` (`JWT_ISSUER`, `JWT_AUDIENCE`), `DELIVERY_MODE`,
/// `FANOUT_*`, and `FANOUT_QUEUE_URL` for the functions that split large fan-outs.
/// Built once per cold start and shared by every invocation.
pub async fn broker_from_env() -> Result<Broker, Error> {
    let sdk = sdk_config(None).await;
    let tables = TableNames::from_env()?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let gateway = ApiGatewayConnectionGateway::from_config(&sdk, &required("MANAGEMENT_ENDPOINT")?);
    let fanout = match std::env::var("FANOUT_QUEUE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let queue = SqsFanoutQueue::new(aws_sdk_sqs::Client::new(&sdk), url);
            Some(Arc::new(queue) as Arc<dyn FanoutQueue>)
        }
        _ => None,
    };
    let ports = Ports {
        connections: Arc::new(DynamoDbConnectionStore::new(
            dynamodb.clone(),
            tables.connections,
        )),
        subscriptions: Arc::new(DynamoDbSubscriptionStore::new(
            dynamodb.clone(),
            tables.subscriptions,
        )),
        events: Arc::new(DynamoDbEventLog::new(dynamodb.clone(), tables.events)),
        gateway: Arc::new(gateway),
        fanout,
    };
    let boards = DynamoDbBoardStore::new(dynamodb, required("APP_TABLE")?);
    Ok(Broker::new(
        build_schema(Arc::new(boards)),
        ports,
        Authenticator::new(AuthConfig::from_env(None)?),
        BrokerConfig::from_env()?,
    ))
}

/// JSON logs for CloudWatch, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .with_target(false)
        .init();
}
