//! The one place where client-core errors become JavaScript errors.
//!
//! napi-rs rejects a promise with an `Error` whose `code` is a napi status, so the DynamoKV code
//! and the variant's fields travel as a small JSON object in the message. `index.js` turns that
//! object back into a `DynamoKVError` with `.code`, `.message` and the fields (`size`, `max`,
//! `needed`, `got`, `afterMs` as numbers; `writeId` as a 32-digit lowercase hex string, since a
//! u128 does not fit a JavaScript number), so JavaScript callers never see the JSON.

use std::fmt::Write as _;

use dynamokv_client::Error;

/// Marks a message as a DynamoKV error payload (see `index.js`, which checks for it).
const MARKER: &str = "dynamokvError";

/// One field of the payload: a JSON number or a JSON string.
enum Field {
    Number(u128),
    Text(String),
}

/// The napi error carrying `err`'s code, message and fields.
pub(crate) fn to_napi(err: Error) -> napi::Error {
    napi::Error::from_reason(payload(&err))
}

/// `err`'s code, message and fields as the JSON object `index.js` reads: the message of a
/// thrown error (see [`to_napi`]) or the `error` of a failed batch item.
pub(crate) fn payload(err: &Error) -> String {
    use Field::{Number, Text};
    let mut fields: Vec<(&str, Field)> = Vec::new();
    match err {
        Error::EmptyKey { max } => fields.push(("max", Number(*max as u128))),
        Error::KeyTooLarge { size, max } | Error::ValueTooLarge { size, max } => {
            fields.push(("size", Number(*size as u128)));
            fields.push(("max", Number(*max as u128)));
        }
        Error::QuorumNotReached { needed, got, .. } => {
            fields.push(("needed", Number(u128::from(*needed))));
            fields.push(("got", Number(u128::from(*got))));
        }
        Error::OutcomeUnknown { write_id, .. } => {
            fields.push(("writeId", Text(write_id_hex(*write_id))));
        }
        Error::Timeout { after } => fields.push(("afterMs", Number(after.as_millis()))),
        // The rest carry only a message; variants added later still get their code.
        _ => {}
    }
    let mut json = format!("{{\"{MARKER}\":true,\"code\":");
    push_json_string(&mut json, err.code());
    json.push_str(",\"message\":");
    push_json_string(&mut json, &err.to_string());
    for (name, value) in fields {
        let _ = write!(json, ",\"{name}\":");
        match value {
            Number(n) => {
                let _ = write!(json, "{n}");
            }
            Text(s) => push_json_string(&mut json, &s),
        }
    }
    json.push('}');
    json
}

/// A write id as JavaScript sees it: 32 lowercase hex digits (big-endian, as on the wire).
fn write_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

/// Parses the `writeId` option: the 32 hex digits of a `DynamoKVError`'s `writeId` (either
/// case). Anything else is refused, before anything is sent, with the `INVALID_INPUT` error a
/// node gives a malformed write id.
pub(crate) fn write_id(hex: &str) -> Result<u128, Error> {
    // from_str_radix alone would also take a sign and fewer digits.
    let well_formed = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
        .ok_or_else(|| Error::InvalidInput {
            message: format!(
                "writeId must be 32 hex digits (the writeId of an OUTCOME_UNKNOWN error, or left out for a fresh one), got {hex:?}"
            ),
        })
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
