//! The demo `make run` shows: put, get, siblings from concurrent writers, reconciliation and
//! delete, against the cluster named by `DYNAMOKV_SEEDS` (or the arguments).
//!
//! ```text
//! cargo run --release -p dynamokv-examples --bin demo -- 127.0.0.1:7070 127.0.0.1:7071
//! ```

use std::process::ExitCode;

use dynamokv_client::{Client, Error};

fn show(values: &[Vec<u8>]) -> String {
    let shown: Vec<String> = values
        .iter()
        .map(|v| format!("{:?}", String::from_utf8_lossy(v)))
        .collect();
    format!("[{}]", shown.join(", "))
}

async fn demo(seeds: Vec<String>) -> Result<(), Error> {
    let client = Client::builder(seeds.clone())
        .credentials_from_env()
        .build()?
        .connected()
        .await?;
    let info = client.cluster_info().await?;
    println!(
        "connected to cluster {:?} via {}: {} node(s), Q = {}, N = {}, R = {}, W = {}",
        info.cluster_name,
        info.answered_by,
        info.members.len(),
        info.partitions,
        info.n,
        info.r,
        info.w
    );
    let key = format!("demo:cart:{}", std::process::id());

    let ctx = client.put(&key, b"apple".to_vec(), None).await?;
    println!(
        "put    {key} = \"apple\"                      (context {} bytes)",
        ctx.as_bytes().len()
    );
    let got = client.get(&key).await?;
    println!("get    {key} -> {}", show(&got.values));

    // Two writers read the same version and both write: neither write is lost.
    let stale = got.context;
    client
        .put(&key, b"apple,banana".to_vec(), Some(&stale))
        .await?;
    client
        .put(&key, b"apple,cherry".to_vec(), Some(&stale))
        .await?;
    println!("put    {key} = \"apple,banana\" and \"apple,cherry\" with the same context");
    let siblings = client.get(&key).await?;
    println!(
        "get    {key} -> {} siblings: {}",
        siblings.values.len(),
        show(&siblings.values)
    );

    // The application reconciles (the paper's shopping cart: union) and writes back with the
    // context that covered both siblings.
    let mut items: Vec<String> = siblings
        .values
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    items.sort();
    items.dedup();
    let merged = items.join(",");
    client
        .put(&key, merged.clone().into_bytes(), Some(&siblings.context))
        .await?;
    let resolved = client.get(&key).await?;
    println!(
        "put    {key} = {merged:?} with the merged context -> {}",
        show(&resolved.values)
    );

    client.delete(&key, &resolved.context).await?;
    let gone = client.get(&key).await?;
    println!("delete {key} -> get returns {} value(s)", gone.values.len());

    match client.put("", b"x".to_vec(), None).await {
        Err(e) => println!("put with an empty key is refused: [{}] {e}", e.code()),
        Ok(_) => println!("unexpected: an empty key was accepted"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut seeds: Vec<String> = std::env::args().skip(1).collect();
    if seeds.is_empty() {
        seeds = std::env::var("DYNAMOKV_SEEDS")
            .unwrap_or_else(|_| "127.0.0.1:7070".into())
            .split(',')
            .map(str::to_string)
            .collect();
    }
    match demo(seeds).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: [{}] {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
