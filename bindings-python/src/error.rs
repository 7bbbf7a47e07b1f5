//! The one place client-core errors become Python exceptions.
//!
//! The exception classes are defined in Python (`dynamokv/_errors.py`) so that
//! `RequestTimeoutError` can also subclass the builtin `TimeoutError` and every class pickles;
//! this module looks them up and maps each `Error` variant one-to-one, keeping its fields as
//! positional constructor arguments after the message.

use pyo3::PyErr;

use dynamokv_client::Error;

use crate::convert::IdBytes;

mod classes {
    pyo3::import_exception!(dynamokv._errors, DynamoKVError);
    pyo3::import_exception!(dynamokv._errors, InvalidConfigError);
    pyo3::import_exception!(dynamokv._errors, EmptyKeyError);
    pyo3::import_exception!(dynamokv._errors, KeyTooLargeError);
    pyo3::import_exception!(dynamokv._errors, ValueTooLargeError);
    pyo3::import_exception!(dynamokv._errors, InvalidContextError);
    pyo3::import_exception!(dynamokv._errors, InvalidQuorumError);
    pyo3::import_exception!(dynamokv._errors, InvalidInputError);
    pyo3::import_exception!(dynamokv._errors, MissingFieldError);
    pyo3::import_exception!(dynamokv._errors, QuorumError);
    pyo3::import_exception!(dynamokv._errors, OutcomeUnknownError);
    pyo3::import_exception!(dynamokv._errors, SiblingLimitError);
    pyo3::import_exception!(dynamokv._errors, UnavailableError);
    pyo3::import_exception!(dynamokv._errors, OverloadedError);
    pyo3::import_exception!(dynamokv._errors, UnauthenticatedError);
    pyo3::import_exception!(dynamokv._errors, PermissionDeniedError);
    pyo3::import_exception!(dynamokv._errors, TlsError);
    pyo3::import_exception!(dynamokv._errors, RequestTimeoutError);
    pyo3::import_exception!(dynamokv._errors, ResolverError);
    pyo3::import_exception!(dynamokv._errors, InternalError);
}

use classes::*;

/// The Python exception for a client-core error. Lazy: the class is looked up, and the
/// exception built, only when Python sees it, so this needs no GIL.
pub(crate) fn to_py(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::InvalidConfig { .. } => PyErr::new::<InvalidConfigError, _>((message,)),
        Error::EmptyKey { max } => PyErr::new::<EmptyKeyError, _>((message, max)),
        Error::KeyTooLarge { size, max } => PyErr::new::<KeyTooLargeError, _>((message, size, max)),
        Error::ValueTooLarge { size, max } => {
            PyErr::new::<ValueTooLargeError, _>((message, size, max))
        }
        Error::InvalidContext { .. } => PyErr::new::<InvalidContextError, _>((message,)),
        Error::InvalidQuorum { .. } => PyErr::new::<InvalidQuorumError, _>((message,)),
        Error::MissingField { .. } => PyErr::new::<MissingFieldError, _>((message,)),
        Error::InvalidInput { .. } => PyErr::new::<InvalidInputError, _>((message,)),
        Error::QuorumNotReached { needed, got, .. } => {
            PyErr::new::<QuorumError, _>((message, needed, got))
        }
        Error::OutcomeUnknown { write_id, .. } => {
            PyErr::new::<OutcomeUnknownError, _>((message, IdBytes(write_id)))
        }
        Error::SiblingLimit { .. } => PyErr::new::<SiblingLimitError, _>((message,)),
        Error::Unavailable { .. } => PyErr::new::<UnavailableError, _>((message,)),
        Error::Overloaded { .. } => PyErr::new::<OverloadedError, _>((message,)),
        Error::Unauthenticated { .. } => PyErr::new::<UnauthenticatedError, _>((message,)),
        Error::PermissionDenied { .. } => PyErr::new::<PermissionDeniedError, _>((message,)),
        Error::Tls { .. } => PyErr::new::<TlsError, _>((message,)),
        Error::Timeout { after } => {
            PyErr::new::<RequestTimeoutError, _>((message, after.as_secs_f64()))
        }
        // A built-in resolver that failed (a Python resolver's own exception is raised instead,
        // see resolver.rs).
        Error::ResolverFailed { .. } => PyErr::new::<ResolverError, _>((message,)),
        Error::Internal { .. } => PyErr::new::<InternalError, _>((message,)),
        // `Error` is non-exhaustive: a variant added later still reaches Python with its code.
        other => PyErr::new::<DynamoKVError, _>((message, other.code())),
    }
}

/// An option client-core cannot even be handed (a negative or non-finite timeout): the same
/// `InvalidConfigError` that client-core's own option checks raise.
pub(crate) fn invalid_config(message: String) -> PyErr {
    PyErr::new::<InvalidConfigError, _>((message,))
}
