//! The port-mapping actor: the shell around [`LeasePolicy`] that does the
//! requests, owns the clock, and publishes results on a `watch`.
//!
//! One task per mapper. It sleeps until the policy's next deadline or an
//! inbox message, does what is due (map, renew, expire), and publishes the
//! mapping held (or `None`). Dropping the handle aborts the task without
//! deleting the mapping (it lapses at the end of its lease);
//! [`PortMapper::shutdown`] deletes it.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument as _;

use super::lease::{Due, Failed, Granted, LeasePolicy};
use super::protocols::{self, Held};
use super::{Mapping, Options, PortMapError};

/// Handle to the port-mapping actor. See the module docs of
/// [`crate::nat::portmap`].
#[derive(Debug)]
pub struct PortMapper {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// `port_mapping = false`: never maps, always `None`.
    Disabled {
        results: watch::Receiver<Option<Mapping>>,
        /// Kept so receivers see a live (if silent) channel.
        _publisher: watch::Sender<Option<Mapping>>,
    },
    Running {
        inbox: mpsc::Sender<Msg>,
        results: watch::Receiver<Option<Mapping>>,
        task: Option<tokio::task::JoinHandle<()>>,
    },
}

#[derive(Debug)]
enum Msg {
    Refresh,
    Shutdown(oneshot::Sender<()>),
}

impl PortMapper {
    /// Starts mapping UDP `local_port` (the daemon's bound data socket) on
    /// the gateway. Results arrive on [`Self::watch`].
    ///
    /// # Panics
    /// Outside a tokio runtime (it spawns a task).
    pub fn spawn(local_port: u16, options: Options) -> Self {
        let (publisher, results) = watch::channel(None);
        let (inbox, rx) = mpsc::channel(8);
        let span = tracing::info_span!("portmap", port = local_port);
        let task = tokio::spawn(run(local_port, options, rx, publisher).instrument(span));
        Self {
            inner: Inner::Running {
                inbox,
                results,
                task: Some(task),
            },
        }
    }

    /// The no-op mapper for `port_mapping = false`: its watch stays `None`.
    pub fn disabled() -> Self {
        let (publisher, results) = watch::channel(None);
        Self {
            inner: Inner::Disabled {
                results,
                _publisher: publisher,
            },
        }
    }

    /// Whether this is the no-op variant.
    pub fn is_disabled(&self) -> bool {
        matches!(self.inner, Inner::Disabled { .. })
    }

    /// The current mapping and its changes. `None` while there is none.
    pub fn watch(&self) -> watch::Receiver<Option<Mapping>> {
        match &self.inner {
            Inner::Disabled { results, .. } | Inner::Running { results, .. } => results.clone(),
        }
    }

    /// The mapping held right now.
    pub fn mapping(&self) -> Option<Mapping> {
        *self.watch().borrow()
    }

    /// Rediscover the gateway and map afresh now (after a network change).
    pub fn refresh(&self) {
        if let Inner::Running { inbox, .. } = &self.inner {
            // A full inbox already holds a pending message that wakes it.
            let _ = inbox.try_send(Msg::Refresh);
        }
    }

    /// Deletes the mapping on the gateway (bounded by the request
    /// timeout) and stops the actor.
    pub async fn shutdown(mut self) {
        if let Inner::Running { inbox, task, .. } = &mut self.inner {
            let (done, wait) = oneshot::channel();
            if inbox.send(Msg::Shutdown(done)).await.is_ok() {
                let _ = wait.await;
            }
            if let Some(task) = task.take() {
                let _ = task.await;
            }
        }
    }
}

impl Drop for PortMapper {
    fn drop(&mut self) {
        if let Inner::Running {
            task: Some(task), ..
        } = &self.inner
        {
            task.abort();
        }
    }
}

async fn run(
    local_port: u16,
    options: Options,
    mut inbox: mpsc::Receiver<Msg>,
    publisher: watch::Sender<Option<Mapping>>,
) {
    let mut actor = Actor {
        local_port,
        policy: LeasePolicy::new(Instant::now(), options.lease_policy_config()),
        options,
        held: None,
        publisher,
        said_unavailable: false,
    };
    loop {
        while let Some(due) = actor.policy.poll_action(Instant::now()) {
            actor.act(due).await;
        }
        let deadline = actor.policy.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(Msg::Refresh) => {
                    tracing::debug!("refresh requested: mapping afresh");
                    actor.policy.refresh(Instant::now());
                }
                Some(Msg::Shutdown(done)) => {
                    actor.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            () = sleep => {}
        }
    }
}

struct Actor {
    local_port: u16,
    options: Options,
    policy: LeasePolicy,
    held: Option<Held>,
    publisher: watch::Sender<Option<Mapping>>,
    /// The "router does not answer" line was logged at info; further
    /// failures go to debug until a mapping succeeds.
    said_unavailable: bool,
}

impl Actor {
    async fn act(&mut self, due: Due) {
        match due {
            Due::Map => {
                let result = match protocols::target(self.local_port, &self.options) {
                    Ok(target) => protocols::map_any(target, &self.options).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(held) => self.install(held).await,
                    Err(e) => self.failed(e),
                }
            }
            Due::Renew => {
                let result = match self.held.as_mut() {
                    Some(held) => held.renew(&self.options).await,
                    None => Err(PortMapError::PortZero),
                };
                match result {
                    Ok(grant) => {
                        let outcome = self.policy.handle_granted(Instant::now(), grant);
                        self.report(outcome);
                    }
                    Err(e) => self.failed(e),
                }
            }
            Due::Expired(mapping) => {
                self.held = None;
                self.publisher.send_replace(None);
                tracing::info!(
                    addr = %mapping.external,
                    protocol = %mapping.protocol,
                    "port mapping lost: its lease ran out without a successful renewal"
                );
            }
        }
    }

    /// A fresh mapping was granted: replace the one held (deleting the old
    /// one if it is a different mapping on the gateway) and publish.
    async fn install(&mut self, held: Held) {
        let grant = held.grant();
        if let Some(old) = self.held.replace(held) {
            let old_grant = old.grant().mapping;
            let different = old_grant.protocol != grant.mapping.protocol
                || old_grant.external != grant.mapping.external;
            if different && let Err(e) = old.delete(&self.options).await {
                tracing::debug!(addr = %old_grant.external, error = %e, "deleting the replaced mapping failed");
            }
        }
        let outcome = self.policy.handle_granted(Instant::now(), grant);
        self.said_unavailable = false;
        self.report(outcome);
    }

    fn report(&mut self, outcome: Granted) {
        match outcome {
            Granted::New(m) => {
                tracing::info!(addr = %m.external, protocol = %m.protocol, lease = ?m.lease, "port mapping made");
            }
            Granted::Renewed(m) => {
                tracing::debug!(addr = %m.external, protocol = %m.protocol, lease = ?m.lease, "port mapping renewed");
            }
            Granted::Changed { old, new } => {
                tracing::info!(
                    addr = %new.external,
                    old_addr = %old.external,
                    protocol = %new.protocol,
                    lease = ?new.lease,
                    "port mapping changed"
                );
            }
            Granted::Rebooted { old, new } => {
                tracing::info!(
                    addr = %new.external,
                    old_addr = ?old.map(|m| m.external),
                    protocol = %new.protocol,
                    "gateway lost its mapping state (epoch went backwards: rebooted?); mapping afresh"
                );
            }
        }
        let mapping = self.policy.mapping();
        self.publisher.send_if_modified(|current| {
            let changed = *current != mapping;
            *current = mapping;
            changed
        });
    }

    fn failed(&mut self, error: PortMapError) {
        match self.policy.handle_failed(Instant::now()) {
            Failed::RenewFailed { mapping } => {
                tracing::debug!(addr = %mapping.external, protocol = %mapping.protocol, %error, "port mapping renewal failed; mapping afresh");
            }
            Failed::Retry { retry_at, mapped } => {
                let retry_in = retry_at.saturating_duration_since(Instant::now());
                if !self.said_unavailable && !mapped {
                    tracing::info!(retry_in = ?round(retry_in), "port mapping unavailable: {error}");
                    self.said_unavailable = true;
                } else {
                    tracing::debug!(retry_in = ?round(retry_in), %error, "port mapping attempt failed");
                }
            }
        }
    }

    async fn shutdown(&mut self) {
        self.policy.stop();
        if let Some(held) = self.held.take() {
            let mapping = held.grant().mapping;
            match held.delete(&self.options).await {
                Ok(()) => {
                    tracing::info!(addr = %mapping.external, protocol = %mapping.protocol, "port mapping deleted");
                }
                Err(e) => {
                    tracing::info!(addr = %mapping.external, protocol = %mapping.protocol, error = %e, "deleting the port mapping failed; it lapses at the end of its lease");
                }
            }
        }
        self.publisher.send_replace(None);
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::portmap::Protocol;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn disabled_is_a_no_op() {
        let mapper = PortMapper::disabled();
        assert!(mapper.is_disabled());
        assert_eq!(mapper.mapping(), None);
        let mut watch = mapper.watch();
        mapper.refresh();
        // Nothing ever changes, but the channel is alive.
        let changed = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(changed.is_err(), "a disabled mapper never publishes");
        mapper.shutdown().await;
    }

    #[tokio::test]
    async fn silent_gateway_publishes_nothing_and_shuts_down_promptly() {
        // A loopback "gateway" where nothing listens: PCP and NAT-PMP get
        // ICMP port unreachable (or silence). No UPnP: its SSDP search is
        // multicast, which must not leave this machine from a unit test.
        let options = Options {
            gateway: Some(Ipv4Addr::LOCALHOST),
            protocols: vec![Protocol::Pcp, Protocol::NatPmp],
            request_timeout: Duration::from_millis(300),
            ..Options::default()
        };
        let mapper = PortMapper::spawn(40123, options);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(mapper.mapping(), None);
        tokio::time::timeout(Duration::from_secs(5), mapper.shutdown())
            .await
            .expect("shutdown returns while attempts fail");
    }
}
