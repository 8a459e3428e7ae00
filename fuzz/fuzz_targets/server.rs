//! The API server's request front end in process: each input is a few HTTP requests (method,
//! path and query, headers, body) sent over an in-memory connection to the server's own handler
//! (`server::router::handle`, behind hyper's HTTP/1 + HTTP/2 server as `server::start` serves it)
//! over a fresh in-memory SQLite store with the initial namespaces (`default`, `kube-system`, ...),
//! each request as the admin unless it has an `Authorization` header of its own (without that,
//! every request got a 401 once the server authenticated). This reaches routing, the query
//! string, body decoding (JSON, YAML, protobuf), defaulting, validation, the patch types,
//! selectors, tables and watches.
//!
//! Input format, requests separated by a line `%%%%`:
//!
//! ```text
//! PATCH /apis/apps/v1/namespaces/default/daemonsets/x?fieldValidation=Strict
//! Content-Type: application/merge-patch+json
//!
//! {"spec":{"revisionHistoryLimit":3}}
//! %%%%
//! GET /apis/apps/v1/daemonsets?watch=1&labelSelector=a%3Db
//! ```
//!
//! The body is `daemonset_agent::fuzzing::server`, which `cargo test` also runs on the seeds.
//! Time is paused (tokio's test clock): watch timeouts and bookmarks pass without waiting. Each
//! response body is read up to a bound (a watch never ends by itself).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::server(data));
