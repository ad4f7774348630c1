//! When a worker looks for work. apalis-redis 1.0.0 fetches when its worker task is woken; left alone, an
//! idle worker wakes only on its heartbeat (seconds). This strategy wakes it when a producer announces
//! new messages (Redis pub/sub) and, as a fallback, on a short timer. Unlike the stock interval strategy
//! it always re-arms: every source is polled until it is pending, so a waker is registered with each.

use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

pub struct WakeStrategy {
    interval: Interval,
    wake: mpsc::Receiver<()>,
}

impl WakeStrategy {
    pub fn new(fallback: Duration, wake: mpsc::Receiver<()>) -> Self {
        let mut interval = tokio::time::interval(fallback);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval, wake }
    }
}

impl PollStrategy for WakeStrategy {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        while self.interval.poll_tick(cx).is_ready() {
            fired = true;
        }
        while let Poll::Ready(Some(())) = self.wake.poll_recv(cx) {
            fired = true;
        }
        if fired { Poll::Ready(Some(())) } else { Poll::Pending }
    }
}

/// Listens on the queue's wake channel and forwards each announcement (coalesced) to the strategy.
/// Reconnects by itself; while Redis is away the fallback timer keeps the worker polling.
pub async fn listen(client: redis::Client, channel: String, tx: mpsc::Sender<()>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    backoff = Duration::from_millis(200);
                    let mut messages = pubsub.on_message();
                    while messages.next().await.is_some() {
                        if tx.is_closed() {
                            return;
                        }
                        // A full channel already holds a wake-up: nothing is lost by dropping this one.
                        let _ = tx.try_send(());
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "wake channel unavailable; polling on the timer"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
