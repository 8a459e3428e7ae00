//! containerd's task exit events, forwarded to the agent (one subscription, resubscribed).
use super::*;

/// A topic of our own, published only to learn that the exit subscription is live.
pub(super) const SUBSCRIBED_TOPIC: &str = "/daemonset-agent/subscribed";

type EventStream = containerd_client::tonic::codec::Streaming<containerd_client::types::Envelope>;

pub(super) async fn subscribe(
    ctd: &Ctd,
) -> std::result::Result<EventStream, containerd_client::tonic::Status> {
    // comma = AND, separate filters = OR; quoted values (a namespace may hold '-' or '.')
    let filters = ["/tasks/exit", SUBSCRIBED_TOPIC]
        .iter()
        .map(|t| format!("namespace==\"{}\",topic==\"{t}\"", ctd.namespace))
        .collect();
    Ok(ctd
        .events()
        .subscribe(ctd.req(SubscribeRequest { filters }))
        .await?
        .into_inner())
}

/// Forwards exits until the stream breaks (false: resubscribe) or the receiver is gone (true).
pub(super) async fn forward_exits(
    mut s: EventStream,
    tx: &tokio::sync::mpsc::Sender<String>,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> bool {
    use prost::Message;
    loop {
        match s.message().await {
            Ok(Some(env)) if env.topic == SUBSCRIBED_TOPIC => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(Some(env)) => {
                let Some(any) = env.event else { continue };
                match containerd_client::events::TaskExit::decode(any.value.as_slice()) {
                    // the init process only (exec'd processes report their own exec id)
                    Ok(exit) if exit.id.is_empty() || exit.id == exit.container_id => {
                        if tx.send(exit.container_id).await.is_err() {
                            return true;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "decode task exit event"),
                }
            }
            Ok(None) => return tx.is_closed(),
            Err(e) => {
                tracing::warn!(error = %crate::runtime::chain(&e), "task exit events broke off");
                return tx.is_closed();
            }
        }
    }
}
