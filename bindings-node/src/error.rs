//! The one place where client-core errors become JavaScript errors.
//!
//! napi-rs rejects a promise with an `Error` whose `code` is a napi status, so the DynamoKV code
//! and the variant's fields travel as a small JSON object in the message. `index.js` turns that
//! object back into a `DynamoKVError` with `.code`, `.message` and the fields (`size`, `max`,
//! `needed`, `got`, `afterMs`), so JavaScript callers never see the JSON.

use std::fmt::Write as _;

use dynamokv_client::Error;

/// Marks a message as a DynamoKV error payload (see `index.js`, which checks for it).
const MARKER: &str = "dynamokvError";

/// The napi error carrying `err`'s code, message and fields.
pub(crate) fn to_napi(err: Error) -> napi::Error {
    let mut fields: Vec<(&str, u128)> = Vec::new();
    match &err {
        Error::EmptyKey { max } => fields.push(("max", *max as u128)),
        Error::KeyTooLarge { size, max } | Error::ValueTooLarge { size, max } => {
            fields.push(("size", *size as u128));
            fields.push(("max", *max as u128));
        }
        Error::QuorumNotReached { needed, got, .. } => {
            fields.push(("needed", u128::from(*needed)));
            fields.push(("got", u128::from(*got)));
        }
        Error::Timeout { after } => fields.push(("afterMs", after.as_millis())),
        // The rest carry only a message; variants added later still get their code.
        _ => {}
    }
    let mut json = format!("{{\"{MARKER}\":true,\"code\":");
    push_json_string(&mut json, err.code());
    json.push_str(",\"message\":");
    push_json_string(&mut json, &err.to_string());
    for (name, value) in fields {
        let _ = write!(json, ",\"{name}\":{value}");
    }
    json.push('}');
    napi::Error::from_reason(json)
}

/// A client-core error for a JavaScript number that is not a whole number in `0..=u32::MAX`.
/// `what` builds the variant, so the error keeps the type the option belongs to.
pub(crate) fn whole_number(
    name: &str,
    value: f64,
    what: fn(String) -> Error,
) -> Result<u32, Error> {
    if value.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&value) {
        // Checked above: a whole number in range, so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return Ok(value as u32);
    }
    Err(what(format!(
        "{name} = {value} is not a whole number between 0 and {}",
        u32::MAX
    )))
}

pub(crate) fn invalid_config(message: String) -> Error {
    Error::InvalidConfig { message }
}

pub(crate) fn invalid_quorum(message: String) -> Error {
    Error::InvalidQuorum { message }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
