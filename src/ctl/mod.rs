//! `wsfault ctl`: a command-line client of the admin API, with the verbs of
//! `toxiproxy-cli` (docs/reference.md#wsfault-ctl). The flags are in [`crate::cmd::ctl`]; here:
//!
//! * [`client`]: the HTTP client, one typed method per request;
//! * [`conditions`]: `match` and `count` from the command line, laid over a
//!   toxic's current ones on update, checked before any request;
//! * [`render`]: tables, `--json` passthrough, attribute and condition
//!   formatting;
//! * [`execute`]: one [`Verb`] → requests → the text to print.
//!
//! The answers are read into the shared view types ([`crate::views`],
//! [`crate::toxics::ToxicSpec`]), leniently, so that a Toxiproxy server works
//! too. Errors: [`crate::error::FailedError`] when the server refuses or
//! cannot be reached (exit 1), [`crate::error::UsageError`] for bad usage
//! (exit 2).

pub mod client;
pub mod conditions;
pub mod render;

use serde_json::{Map, Value};

pub use client::{AdminClient, NewToxic, DEFAULT_ADMIN};
pub use conditions::Conditions;

use render::{pretty, render_connections, render_proxies, render_proxy_detail};

/// One request of `wsfault ctl`, as the command line gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    /// Every proxy, one line each.
    List,
    /// One proxy and its toxics.
    Inspect {
        /// Proxy name.
        proxy: String,
    },
    /// Add an enabled proxy.
    Create {
        /// Proxy name.
        proxy: String,
        /// Listen address.
        listen: String,
        /// Upstream target.
        upstream: String,
    },
    /// Enable ↔ disable.
    Toggle {
        /// Proxy name.
        proxy: String,
    },
    /// Remove a proxy.
    Delete {
        /// Proxy name.
        proxy: String,
    },
    /// Add a toxic.
    ToxicAdd {
        /// Proxy name.
        proxy: String,
        /// The toxic.
        toxic: NewToxic,
    },
    /// Set some attributes, the toxicity and/or `match` and `count` fields
    /// of a toxic.
    ToxicUpdate {
        /// Proxy name.
        proxy: String,
        /// Toxic name.
        name: String,
        /// New toxicity.
        toxicity: Option<f64>,
        /// Attributes to set (the others keep their values).
        attributes: Map<String, Value>,
        /// `match` and `count` fields to set (the others keep their values).
        conditions: Conditions,
    },
    /// Remove a toxic.
    ToxicRemove {
        /// Proxy name.
        proxy: String,
        /// Toxic name.
        name: String,
    },
    /// Live connections of a proxy.
    Connections {
        /// Proxy name.
        proxy: String,
    },
    /// Enable every proxy, remove every toxic.
    Reset,
    /// Succeeds iff `GET /healthz` answers 2xx.
    Health,
}

/// Runs one verb and returns what to print: the server's JSON with `json`,
/// else a table or a confirmation.
pub async fn execute(client: &AdminClient, verb: &Verb, json: bool) -> anyhow::Result<String> {
    match verb {
        Verb::List => {
            let reply = client.list().await?;
            if json {
                return Ok(pretty(reply.body()));
            }
            let proxies = reply.parse()?;
            if proxies.is_empty() {
                return Ok(
                    "no proxies (create one with `wsfault ctl create NAME -l ADDR -u TARGET`)\n"
                        .into(),
                );
            }
            Ok(render_proxies(&proxies))
        }
        Verb::Inspect { proxy } => {
            let reply = client.get(proxy).await?;
            if json {
                return Ok(pretty(reply.body()));
            }
            Ok(render_proxy_detail(&reply.parse()?))
        }
        Verb::Create {
            proxy,
            listen,
            upstream,
        } => {
            let reply = client.create(proxy, listen, upstream).await?;
            if json {
                return Ok(pretty(reply.body()));
            }
            let created = reply.parse()?;
            Ok(format!(
                "Created proxy {}.\n{}",
                created.name,
                render_proxies(std::slice::from_ref(&created))
            ))
        }
        Verb::Toggle { proxy } => {
            let (requested, reply) = client.toggle(proxy).await?;
            if json {
                return Ok(pretty(reply.body()));
            }
            let enabled = reply.parse().map(|p| p.enabled).unwrap_or(requested);
            Ok(format!(
                "Proxy {proxy} is now {}.\n",
                if enabled { "enabled" } else { "disabled" }
            ))
        }
        Verb::Delete { proxy } => {
            let body = client.delete(proxy).await?;
            Ok(done(json, &body, format!("Deleted proxy {proxy}.\n")))
        }
        Verb::ToxicAdd { proxy, toxic } => {
            let reply = client.add_toxic(proxy, toxic).await?;
            if json {
                return Ok(pretty(reply.body()));
            }
            Ok(render::render_toxic_answer(
                &format!("Added toxic {{}} to proxy {proxy}."),
                &reply.parse()?,
            ))
        }
        Verb::ToxicUpdate {
            proxy,
            name,
            toxicity,
            attributes,
            conditions,
        } => {
            let reply = client
                .update_toxic(proxy, name, *toxicity, attributes, conditions)
                .await?;
            if json {
                return Ok(pretty(reply.body()));
            }
            Ok(render::render_toxic_answer(
                &format!("Updated toxic {{}} on proxy {proxy}."),
                &reply.parse()?,
            ))
        }
        Verb::ToxicRemove { proxy, name } => {
            let body = client.remove_toxic(proxy, name).await?;
            Ok(done(
                json,
                &body,
                format!("Removed toxic {name} from proxy {proxy}.\n"),
            ))
        }
        Verb::Connections { proxy } => {
            let reply = client.connections(proxy).await?;
            if json {
                return Ok(pretty(reply.body()));
            }
            let connections = reply.parse()?;
            if connections.is_empty() {
                return Ok(format!("no live connections on proxy {proxy}\n"));
            }
            Ok(render_connections(&connections))
        }
        Verb::Reset => {
            let body = client.reset().await?;
            Ok(done(
                json,
                &body,
                "Reset: every proxy enabled, every toxic removed.\n".into(),
            ))
        }
        Verb::Health => {
            let body = client.health().await?;
            Ok(done(json, &body, "ok\n".into()))
        }
    }
}

/// Output of a verb whose answer is usually an empty 204.
fn done(json: bool, body: &[u8], text: String) -> String {
    if json {
        pretty(body)
    } else {
        text
    }
}
