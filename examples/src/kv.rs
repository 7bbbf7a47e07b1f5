//! A one-shot command-line client: get, put and delete with contexts as hex, so that scripts
//! (and the cross-language tests) can hand a context from one SDK to another.
//!
//! ```text
//! kv [--seeds A,B] get KEY                        -> {"values": [...], "context": "HEX"}
//! kv [--seeds A,B] put KEY VALUE [CONTEXT_HEX]    -> {"context": "HEX"}
//! kv [--seeds A,B] delete KEY CONTEXT_HEX         -> {"context": "HEX"}
//! ```
//!
//! Seeds come from `--seeds` or `DYNAMOKV_SEEDS`; values are printed as UTF-8 (lossy).

use std::process::ExitCode;

use dynamokv_client::{Client, Context};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("{s:?} is not hex: odd length"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("{s:?} is not hex: {e}")))
        .collect()
}

async fn run(args: Vec<String>) -> Result<String, String> {
    let mut args = args.into_iter().peekable();
    let mut seeds = std::env::var("DYNAMOKV_SEEDS").unwrap_or_else(|_| "127.0.0.1:7070".into());
    if args.peek().is_some_and(|a| a == "--seeds") {
        args.next();
        seeds = args.next().ok_or("--seeds needs a value")?;
    }
    let rest: Vec<String> = args.collect();
    let client = Client::builder(seeds.split(',').map(str::to_string))
        .credentials_from_env()
        .build()
        .map_err(|e| e.to_string())?
        .connected()
        .await
        .map_err(|e| e.to_string())?;
    let context = |s: Option<&String>| -> Result<Context, String> {
        Ok(Context::from_bytes(unhex(s.map_or("", String::as_str))?))
    };
    match rest.first().map(String::as_str) {
        Some("get") if rest.len() == 2 => {
            let got = client.get(&rest[1]).await.map_err(|e| e.to_string())?;
            let values: Vec<String> = got
                .values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            Ok(serde_json::json!({"values": values, "context": hex(got.context.as_bytes())})
                .to_string())
        }
        Some("put") if rest.len() == 3 || rest.len() == 4 => {
            let ctx = context(rest.get(3))?;
            let out = client
                .put(&rest[1], rest[2].clone().into_bytes(), Some(&ctx))
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({"context": hex(out.as_bytes())}).to_string())
        }
        Some("delete") if rest.len() == 3 => {
            let out = client
                .delete(&rest[1], &context(rest.get(2))?)
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({"context": hex(out.as_bytes())}).to_string())
        }
        _ => Err(
            "usage: kv [--seeds A,B] get KEY | put KEY VALUE [CONTEXT_HEX] | delete KEY CONTEXT_HEX"
                .into(),
        ),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}
