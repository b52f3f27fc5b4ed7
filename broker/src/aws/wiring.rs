//! Building a broker on AWS: the ports from an SDK configuration, the app's tables, and the
//! whole broker from the environment the SAM template sets.

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::SdkConfig;

use super::config::{TableNames, sdk_config};
use super::dynamodb::{DynamoDbConnectionStore, DynamoDbEventLog, DynamoDbSubscriptionStore};
use super::gateway::{ApiGatewayConnectionGateway, PostClient};
use super::sqs::SqsFanoutQueue;
use crate::{
    App, Authenticator, Broker, BrokerConfig, ConfigError, ConnectionGateway, FanoutQueue, Ports,
    Storage, TableSpec, settings,
};

/// The broker's ports on AWS: the three DynamoDB tables, `gateway` to post to connections,
/// and SQS for large fan-outs when `fanout_queue_url` is given (else they are delivered
/// inline). Used by the Lambda functions and the local mode alike; only the gateway
/// differs (the local mode posts to its own Management API).
pub fn ports(
    sdk: &SdkConfig,
    tables: &TableNames,
    gateway: Arc<dyn ConnectionGateway>,
    fanout_queue_url: Option<&str>,
) -> Ports {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let fanout = fanout_queue_url.map(|url| {
        let queue = SqsFanoutQueue::new(aws_sdk_sqs::Client::new(sdk), url);
        Arc::new(queue) as Arc<dyn FanoutQueue>
    });
    Ports {
        connections: Arc::new(DynamoDbConnectionStore::new(
            dynamodb.clone(),
            tables.connections.clone(),
        )),
        subscriptions: Arc::new(DynamoDbSubscriptionStore::new(
            dynamodb.clone(),
            tables.subscriptions.clone(),
        )),
        // The replay gate and the page marks keep their items in the subscriptions table.
        replay_gate: Arc::new(super::dynamodb::DynamoDbReplayGate::new(
            dynamodb.clone(),
            tables.subscriptions.clone(),
        )),
        page_marks: Arc::new(super::dynamodb::DynamoDbPageMarks::new(
            dynamodb.clone(),
            tables.subscriptions.clone(),
        )),
        // The per-user limits' counters too (`#quota/{key}` partitions).
        quotas: Arc::new(super::dynamodb::DynamoDbQuotas::new(
            dynamodb.clone(),
            tables.subscriptions.clone(),
        )),
        // Its void marks in the subscriptions table too (`#void/{topic}/{id}` partitions).
        events: Arc::new(
            DynamoDbEventLog::new(dynamodb, tables.events.clone())
                .with_void_marks(tables.subscriptions.clone()),
        ),
        gateway,
        fanout,
    }
}

/// An app's tables on DynamoDB: the client, and the deployed name of each table the app
/// declares (by [`TableSpec::name`]).
#[derive(Clone, Debug)]
pub struct AppTables {
    client: aws_sdk_dynamodb::Client,
    names: HashMap<String, String>,
}

impl AppTables {
    /// `names` maps each table's [`TableSpec::name`] to its deployed name.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        names: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Self {
            client,
            names: names.into_iter().collect(),
        }
    }

    /// The deployed names from the environment: each table's [`TableSpec::env_var`]
    /// (`ORDERS_TABLE` for `orders`), which must be set.
    pub fn from_env(
        client: aws_sdk_dynamodb::Client,
        specs: &[TableSpec],
    ) -> Result<Self, ConfigError> {
        let names = specs
            .iter()
            .map(|spec| {
                let var = spec.env_var();
                let name = settings::APP_TABLE
                    .get_named(&var)?
                    .ok_or(ConfigError::Missing(var))?;
                Ok((spec.name.to_owned(), name))
            })
            .collect::<Result<HashMap<_, _>, ConfigError>>()?;
        Ok(Self { client, names })
    }

    /// The DynamoDB client the app's tables are read and written with.
    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    /// The deployed name of the app's table `name`.
    pub fn name(&self, name: &str) -> Result<&str, ConfigError> {
        self.names
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ConfigError::UnknownTable(name.to_owned()))
    }
}

/// The broker a Lambda function runs, serving `app`, configured from the environment the
/// SAM template sets: every Lambda variable of [`crate::settings`] (the tables, one
/// `{NAME}_TABLE` per table of the app, `MANAGEMENT_ENDPOINT`, `JWT_*`, `MANAGEMENT_POST`,
/// the tunables of [`BrokerConfig::from_env`], and `FANOUT_QUEUE_URL` for the functions that
/// split large fan-outs). Built once per cold start.
pub async fn broker_from_env(app: &dyn App) -> Result<Broker, ConfigError> {
    let sdk = sdk_config(None).await;
    let gateway = ApiGatewayConnectionGateway::from_config_with(
        &sdk,
        &settings::MANAGEMENT_ENDPOINT.value()?,
        PostClient::from_env()?,
    );
    let ports = ports(
        &sdk,
        &TableNames::from_env()?,
        Arc::new(gateway),
        settings::FANOUT_QUEUE_URL.get()?.as_deref(),
    );
    let tables = AppTables::from_env(aws_sdk_dynamodb::Client::new(&sdk), &app.tables())?;
    let schema = app.schema(&Storage::DynamoDb(tables))?;
    Ok(Broker::new(
        schema,
        ports,
        Authenticator::from_env(None)?,
        BrokerConfig::from_env()?,
    )
    .with_app_hooks(app))
}
