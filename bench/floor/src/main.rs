//! `coldstart-floor`: a bare `lambda_runtime` function that answers every event with the
//! event itself. `broker-coldstart-bench` builds it and starts it beside the app's four
//! functions: its start is the floor theirs are measured against.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(event.payload)
    }))
    .await
}
