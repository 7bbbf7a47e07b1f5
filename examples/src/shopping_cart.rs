//! The paper's shopping cart (sections 4.4 and 6.3): two sessions add items to the same cart
//! at the same time, one of them while a node is down. Their writes become concurrent versions
//! (siblings); a read with the union resolver merges them and writes the merge back, and no
//! item either session added is lost.
//!
//! ```text
//! DYNAMOKV_SEEDS=127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072 \
//!     cargo run --release -p dynamokv-examples --bin shopping_cart [-- --pause-pid PID]
//! ```
//!
//! With `--pause-pid PID` (a node's process id, e.g. from `pgrep -f 'dynamokv serve'`) the
//! second session runs while that node is stopped (SIGSTOP), and it is resumed (SIGCONT) at the
//! end: the session's writes go to the other replicas, and the cart still merges.

use std::process::{Command, ExitCode};
use std::time::Duration;

use dynamokv_client::{Client, Context, Error, Resolver};

/// One shopping session: it started from the cart as it read it (`context`) and adds `items`
/// one by one, each write superseding the session's previous one. Two sessions started from
/// the same read write concurrently: their carts become siblings.
async fn session(
    client: &Client,
    name: &str,
    cart: &str,
    items: &[&str],
    mut context: Context,
) -> Result<(), Error> {
    let mut mine: Vec<&str> = Vec::new();
    for item in items {
        mine.push(item);
        let value = serde_json::to_vec(&mine).unwrap_or_default();
        context = client.put(cart, value, Some(&context)).await?;
        println!("session {name} added {item:?}");
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("could not send SIG{sig} to {pid}");
    }
}

async fn run(seeds: Vec<String>, pause: Option<u32>) -> Result<bool, Error> {
    let client = Client::builder(seeds)
        .credentials_from_env()
        .attempt_timeout(Duration::from_millis(1500))
        .request_timeout(Duration::from_secs(10))
        .build()?
        .connected()
        .await?;
    let cart = format!("cart:{}", std::process::id());
    let start = client.put(&cart, b"[]".to_vec(), None).await?;
    println!("{cart}: empty cart created");

    // Two sessions that both read the empty cart, then each add items from that same view,
    // at the same time; session B while a node is down (with --pause-pid).
    let alice = ["book", "pen"];
    let bob = ["lamp", "mug", "pen"];
    let session_b = async {
        if let Some(pid) = pause {
            signal(pid, "STOP");
            println!("node process {pid} stopped (SIGSTOP): session B adds while it is down");
        }
        let added = session(&client, "B", &cart, &bob, start.clone()).await;
        if let Some(pid) = pause {
            signal(pid, "CONT");
            println!("node process {pid} resumed (SIGCONT)");
        }
        added
    };
    let (a, b) = tokio::join!(
        session(&client, "A", &cart, &alice, start.clone()),
        session_b
    );
    a?;
    b?;

    let before = client.get(&cart).await?;
    println!("{cart}: {} concurrent versions", before.values.len());
    let resolved = client
        .get_resolved(&cart, &Resolver::UnionJson, None, true)
        .await?;
    let items: Vec<String> = resolved
        .value
        .as_deref()
        .map(|v| serde_json::from_slice(v).unwrap_or_default())
        .unwrap_or_default();
    println!(
        "resolved with the union of the versions ({} merged, written back: {}): {items:?}",
        resolved.siblings, resolved.written_back
    );
    let after = client.get(&cart).await?;
    println!(
        "{cart}: {} version after the write-back",
        after.values.len()
    );
    let lost: Vec<&str> = alice
        .iter()
        .chain(bob.iter())
        .copied()
        .filter(|i| !items.iter().any(|x| x == i))
        .collect();
    if lost.is_empty() && after.values.len() == 1 {
        println!("nothing added was lost");
        Ok(true)
    } else {
        println!("LOST: {lost:?}; versions left: {}", after.values.len());
        Ok(false)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut seeds: Vec<String> = Vec::new();
    let mut pause = None;
    while let Some(a) = args.next() {
        if a == "--pause-pid" {
            match args.next().and_then(|p| p.parse().ok()) {
                Some(pid) => pause = Some(pid),
                None => {
                    eprintln!("--pause-pid needs a process id");
                    return ExitCode::from(2);
                }
            }
        } else {
            seeds.push(a);
        }
    }
    if seeds.is_empty() {
        seeds = std::env::var("DYNAMOKV_SEEDS")
            .unwrap_or_else(|_| "127.0.0.1:7070".into())
            .split(',')
            .map(str::to_string)
            .collect();
    }
    match run(seeds, pause).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shopping cart failed: {e}");
            ExitCode::FAILURE
        }
    }
}
