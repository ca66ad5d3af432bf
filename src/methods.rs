//! [`Methods`]: a table of typed methods that answers requests, with OSE's
//! failure codes for unknown methods, bad arguments and panics.

use std::collections::HashMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{codes, ServiceFailure};
use crate::event::{panic_message, Request};
use crate::wire::{self, Payload};

type Handler = Box<dyn FnMut(&Request) -> Result<Payload, ServiceFailure> + Send>;

/// A table of methods, each a closure taking the request and its decoded
/// arguments and returning a value or a [`ServiceFailure`].
///
/// [`handle`](Self::handle) answers a request from the table:
/// - an unknown method fails with code 55 (method unavailable);
/// - arguments that do not decode as the method's type fail with 54
///   (request decoding error);
/// - a closure's `Err` fails with that failure (its origin filled in);
/// - a panicking closure fails with 57 (application error), the panic
///   message in the details.
///
/// ```
/// use netsvc::{Dispatcher, Methods, ServiceFailure};
/// # fn main() -> netsvc::Result<()> {
/// let d = Dispatcher::new()?;
/// let calc = d.service("calc").serve(
///     Methods::new()
///         .method("add", |_req, (a, b): (i64, i64)| Ok::<_, ServiceFailure>(a + b))
///         .method("div", |_req, (a, b): (i64, i64)| {
///             if b == 0 {
///                 Err(ServiceFailure::parameters_incorrect("division by zero"))
///             } else {
///                 Ok(a / b)
///             }
///         }),
/// )?;
/// let me = d.service("client").open()?;
/// let sum: i64 = me.call(calc.binding(), "add", &(2, 3))?;
/// assert_eq!(sum, 5);
/// let err = me.call::<i64, _>(calc.binding(), "div", &(1, 0)).unwrap_err();
/// assert_eq!(err.code(), 56);
/// assert_eq!(me.call::<i64, _>(calc.binding(), "mul", &(1, 2)).unwrap_err().code(), 55);
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Methods {
    table: HashMap<String, Handler>,
}

impl fmt::Debug for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.table.keys().collect();
        names.sort();
        f.debug_struct("Methods").field("methods", &names).finish()
    }
}

impl Methods {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a method.
    pub fn method<A, R, F>(mut self, name: &str, mut f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: FnMut(&Request, A) -> Result<R, ServiceFailure> + Send + 'static,
    {
        let handler: Handler = Box::new(move |request: &Request| {
            let args: A = request.decode().map_err(|e| {
                ServiceFailure::new(codes::REQUEST_DECODING_ERROR, "request decoding error")
                    .with_details(e.to_string())
            })?;
            let value = f(request, args)?;
            wire::encode(&value).map_err(|e| {
                ServiceFailure::application("reply could not be encoded")
                    .with_details(e.to_string())
            })
        });
        self.table.insert(name.to_owned(), handler);
        self
    }

    /// Whether the table has that method.
    pub fn contains(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    /// Answers the request from the table (see the type's documentation).
    pub fn handle(&mut self, request: Request) {
        let outcome = match self.table.get_mut(request.method()) {
            None => Err(
                ServiceFailure::new(codes::METHOD_UNAVAILABLE, "method unavailable")
                    .with_details(format!("no method named {:?}", request.method())),
            ),
            Some(handler) => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&request))) {
                    Ok(outcome) => outcome,
                    Err(panic) => {
                        let message = panic_message(panic.as_ref());
                        log::error!(
                            "netsvc: method {} of {} panicked: {message}",
                            request.method(),
                            request.receiver()
                        );
                        Err(ServiceFailure::application("application error")
                            .with_details(format!("method panicked: {message}")))
                    }
                }
            }
        };
        let _ = request.respond(outcome);
    }
}
