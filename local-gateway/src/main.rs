//! `broker-local`: run the broker on one machine, or mint a development token.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use local_gateway::{LocalGateway, Options};

#[derive(Parser)]
#[command(
    version,
    about = "Serverless realtime GraphQL, locally: no AWS account needed"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL over HTTP and WebSocket, and the Management API (the default command).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
        /// Keep state in DynamoDB at this endpoint (e.g. a moto server) instead of in memory,
        /// and poll the events table's stream. Table names come from CONNECTIONS_TABLE,
        /// SUBSCRIPTIONS_TABLE, EVENTS_TABLE, APP_TABLE (defaults: broker-connections, …).
        #[arg(long, env = "DYNAMODB_ENDPOINT")]
        dynamodb_endpoint: Option<String>,
        /// With --dynamodb-endpoint: create the tables when missing.
        #[arg(long)]
        create_tables: bool,
        /// With --dynamodb-endpoint: split large fan-outs into this SQS queue (same
        /// endpoint), or "create" to create `broker-fanout` with its dead-letter queue.
        #[arg(long, env = "FANOUT_QUEUE_URL")]
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = Options::from_env()?;
    match Cli::parse().command {
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
            let mut options = options;
            if let Some(endpoint) = dynamodb_endpoint {
                options.backend = aws_backend(endpoint, create_tables, fanout_queue).await?;
            }
            serve(listen, options).await
        }
        None => {
            let listen = std::env::var("BROKER_LISTEN")
                .ok()
                .map(|v| v.parse())
                .transpose()
                .context("BROKER_LISTEN")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4000)));
            serve(listen, options).await
        }
    }
}

async fn serve(listen: SocketAddr, options: Options) -> anyhow::Result<()> {
    if std::env::var("JWT_SECRET").is_err() {
        tracing::warn!("JWT_SECRET is not set: using the documented development secret");
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
        "broker-local is serving"
    );
    tokio::signal::ctrl_c().await?;
    gateway.shutdown().await;
    Ok(())
}

async fn aws_backend(
    endpoint: String,
    create_tables: bool,
    fanout_queue: Option<String>,
) -> anyhow::Result<local_gateway::Backend> {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let tables = broker::aws::TableNames {
        connections: var("CONNECTIONS_TABLE", "broker-connections"),
        subscriptions: var("SUBSCRIPTIONS_TABLE", "broker-subscriptions"),
        events: var("EVENTS_TABLE", "broker-events"),
    };
    let fanout_queue_url = match fanout_queue.as_deref() {
        Some("create") => {
            let sdk = broker::aws::sdk_config(Some(&endpoint)).await;
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            Some(broker::aws::provision::create_fanout_queue(&sqs, "broker-fanout").await?)
        }
        other => other.map(str::to_owned),
    };
    Ok(local_gateway::Backend::Aws(
        local_gateway::aws::AwsBackend {
            endpoint: Some(endpoint),
            tables,
            app_table: var("APP_TABLE", "broker-app"),
            fanout_queue_url,
            create_tables,
        },
    ))
}
