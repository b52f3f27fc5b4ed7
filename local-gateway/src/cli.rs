//! The `broker-local` command line: run the broker on one machine serving one of the apps
//! the binary was built with, or mint a development token. An app crate can ship a local
//! binary of its own by calling [`main`] with itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use broker::{App, ConfigError, settings};
use clap::{Parser, Subcommand};

use crate::{LocalGateway, Options};

/// An app the binary can serve: its name for `--app`, and how to make it.
pub type AppChoice = (&'static str, fn() -> Arc<dyn App>);

#[derive(Parser)]
#[command(
    version,
    about = "Serverless realtime GraphQL, locally: no AWS account needed"
)]
struct Cli {
    /// The app to serve [env: BROKER_APP] (default: the first the binary was built with).
    #[arg(long, global = true)]
    app: Option<String>,
    /// Where state lives: `file:PATH` (a database file, created when missing; state
    /// survives restarts) or `memory` (gone at exit). Default: `file:DATA_DIR/APP.redb`.
    /// Ignored with --dynamodb-endpoint. [env: BROKER_STORE]
    #[arg(long, global = true, value_parser = parse_store)]
    store: Option<Store>,
    /// The folder of the default database file [env: BROKER_DATA_DIR] [default: .broker-local]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--store`: where the local mode keeps its state.
#[derive(Clone, Debug)]
enum Store {
    Memory,
    File(PathBuf),
}

fn parse_store(value: &str) -> Result<Store, String> {
    match value {
        "memory" => Ok(Store::Memory),
        _ => match value.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(Store::File(path.into())),
            _ => Err(format!(
                "{value:?}: expected `memory` or `file:PATH` (e.g. file:state.redb)"
            )),
        },
    }
}

/// The app named `name`, or the first of `apps` when no name is given, with its name.
fn choose(apps: &[AppChoice], name: Option<&str>) -> anyhow::Result<(&'static str, Arc<dyn App>)> {
    let found = match name {
        None => apps.first(),
        Some(name) => apps.iter().find(|(n, _)| *n == name),
    };
    match found {
        Some((name, make)) => Ok((name, make())),
        None => {
            let known: Vec<&str> = apps.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown app {:?} (this binary serves: {})",
                name.unwrap_or_default(),
                known.join(", ")
            )
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL over HTTP and WebSocket, and the Management API (the default command).
    Serve {
        /// Address to listen on [env: BROKER_LISTEN] [default: 127.0.0.1:4000]
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Keep state in DynamoDB at this endpoint (e.g. a moto server) instead of in memory,
        /// and poll the events table's stream. Table names come from CONNECTIONS_TABLE,
        /// SUBSCRIPTIONS_TABLE, EVENTS_TABLE and one {NAME}_TABLE per table of the app
        /// (defaults: broker-connections, …, broker-{name}). [env: DYNAMODB_ENDPOINT]
        #[arg(long)]
        dynamodb_endpoint: Option<String>,
        /// With --dynamodb-endpoint: create the tables when missing.
        #[arg(long)]
        create_tables: bool,
        /// With --dynamodb-endpoint: split large fan-outs into this SQS queue (same
        /// endpoint), or "create" to create the FIFO queue `broker-fanout.fifo` with its
        /// dead-letter queue. [env: FANOUT_QUEUE_URL]
        #[arg(long)]
        fanout_queue: Option<String>,
    },
    /// Print a development token for a user id, signed with the configured JWT_SECRET
    /// (or the local default), with JWT_ISSUER / JWT_AUDIENCE when set.
    Token {
        user_id: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 24 * 60 * 60)]
        ttl: u64,
    },
}

/// Runs the command line, serving one of `apps` (the first by default).
pub async fn main(apps: &[AppChoice]) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    // A flag wins over its variable, which wins over the default.
    let app_name = or_env_opt(cli.app, &settings::BROKER_APP)?;
    let (app_name, app) = choose(apps, app_name.as_deref())?;
    let mut options = Options::from_env(app)?;
    let store = match cli.store {
        Some(store) => Some(store),
        None => match settings::BROKER_STORE.get()? {
            Some(value) => Some(
                parse_store(&value)
                    .map_err(|reason| settings::BROKER_STORE.invalid(value, reason))?,
            ),
            None => None,
        },
    };
    options.backend = match store {
        Some(Store::Memory) => crate::Backend::Memory,
        Some(Store::File(path)) => crate::Backend::File(path),
        None => {
            let data_dir = or_env(cli.data_dir, &settings::BROKER_DATA_DIR)?;
            crate::Backend::File(data_dir.join(format!("{app_name}.redb")))
        }
    };
    match cli.command {
        Some(Command::Token { user_id, ttl }) => {
            let auth = broker::Authenticator::new(options.auth);
            println!("{}", auth.mint(&user_id, ttl));
            Ok(())
        }
        Some(Command::Serve {
            listen,
            dynamodb_endpoint,
            create_tables,
            fanout_queue,
        }) => {
            let listen = or_env(listen, &settings::BROKER_LISTEN)?;
            if let Some(endpoint) = or_env_opt(dynamodb_endpoint, &settings::DYNAMODB_ENDPOINT)? {
                let fanout_queue = or_env_opt(fanout_queue, &settings::FANOUT_QUEUE_URL)?;
                options.backend =
                    aws_backend(&options, endpoint, create_tables, fanout_queue).await?;
            }
            serve(listen, options).await
        }
        None => serve(settings::BROKER_LISTEN.value()?, options).await,
    }
}

/// The flag's value when given, else the variable's or its declared default.
fn or_env<T>(flag: Option<T>, var: &settings::Var<T>) -> Result<T, ConfigError> {
    match flag {
        Some(value) => Ok(value),
        None => var.value(),
    }
}

/// The flag's value when given, else the variable's; `None` when neither is set.
fn or_env_opt<T>(flag: Option<T>, var: &settings::Var<T>) -> Result<Option<T>, ConfigError> {
    match flag {
        Some(value) => Ok(Some(value)),
        None => var.get(),
    }
}

async fn serve(listen: SocketAddr, options: Options) -> anyhow::Result<()> {
    // Unset and empty are one case (the settings' rule for `JWT_SECRET`): the same warning.
    if settings::JWT_SECRET.get()?.is_none() && options.key_set.is_none() {
        tracing::warn!("JWT_SECRET is not set or empty: using the documented development secret");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let gateway = LocalGateway::start(listener, options.clone()).await?;
    if options.web.dir.is_some() {
        tracing::info!(url = %gateway.web_url(), "the web app");
    }
    if options.web.dev_tokens {
        tracing::warn!(
            "POST /dev/token signs in any user name without a password: for local development only"
        );
    }
    tracing::info!(
        http = %gateway.graphql_url(),
        websocket = %gateway.websocket_url(),
        management = %gateway.management_endpoint(),
        mode = ?options.broker.delivery_mode,
        store = %match &options.backend {
            crate::Backend::Memory => "memory".to_owned(),
            crate::Backend::File(path) => format!("file:{}", path.display()),
            crate::Backend::Aws(_) => "DynamoDB".to_owned(),
        },
        "broker-local is serving"
    );
    tokio::signal::ctrl_c().await?;
    gateway.shutdown().await;
    Ok(())
}

async fn aws_backend(
    options: &Options,
    endpoint: String,
    create_tables: bool,
    fanout_queue: Option<String>,
) -> anyhow::Result<crate::Backend> {
    let tables = broker::aws::TableNames {
        connections: settings::CONNECTIONS_TABLE.local_value()?,
        subscriptions: settings::SUBSCRIPTIONS_TABLE.local_value()?,
        events: settings::EVENTS_TABLE.local_value()?,
    };
    let fanout_queue_url = match fanout_queue.as_deref() {
        Some("create") => {
            let sdk = broker::aws::sdk_config(Some(&endpoint)).await;
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            Some(broker::aws::provision::create_fanout_queue(&sqs, "broker-fanout.fifo").await?)
        }
        other => other.map(str::to_owned),
    };
    Ok(crate::Backend::Aws(crate::aws::AwsBackend {
        endpoint: Some(endpoint),
        tables,
        app_tables: options
            .app
            .tables()
            .iter()
            .map(|spec| {
                let name = match settings::APP_TABLE.get_named(&spec.env_var())? {
                    Some(name) => name,
                    None => settings::APP_TABLE
                        .local_default()
                        .expect("{NAME}_TABLE declares its local default")
                        .replace("{name}", spec.name),
                };
                Ok((spec.name.to_owned(), name))
            })
            .collect::<Result<_, ConfigError>>()?,
        fanout_queue_url,
        create_tables,
    }))
}
