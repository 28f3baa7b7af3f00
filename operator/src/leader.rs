//! Leader election with a `coordination.k8s.io` Lease named `operator.dapr.io` (Dapr's id), so
//! that with several replicas only one runs the reconcilers and aggregate status writes; the
//! operator API serves on every replica.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Dapr's lease name.
pub const LEASE_NAME: &str = "operator.dapr.io";
/// How long a lease is valid without renewal (controller-runtime's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps trying to renew before it gives up leading.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often to try to acquire or renew.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One replica's handle on the lease.
pub struct LeaseLock {
    pub api: Api<Lease>,
    pub identity: String,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl LeaseLock {
    /// Takes the lease if free or expired, renews it if held; true while this replica holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let seconds = LEASE_DURATION.as_secs() as i32;
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                (Some(renewed), Some(duration)) => {
                    let until = renewed.0 + std::time::Duration::from_secs(duration.max(0) as u64);
                    until < Timestamp::now()
                }
                _ => true,
            };
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            let _ = self
                .api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await;
        }
    }
}

/// Runs `lead` while this replica holds the lease; `lead` gets a receiver that turns true when
/// leadership is lost or the operator stops. Returns after `shutdown`, the lease released.
pub async fn run<F, Fut>(
    lock: LeaseLock,
    mut shutdown: watch::Receiver<bool>,
    leading: watch::Sender<bool>,
    lead: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut current: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        let held = match lock.try_acquire_or_renew().await {
            Ok(held) => {
                if held {
                    last_renewal = tokio::time::Instant::now();
                }
                held
            }
            Err(error) => {
                tracing::warn!(%error, lease = LEASE_NAME, "failed to acquire or renew the lease");
                current.is_some() && last_renewal.elapsed() < RENEW_DEADLINE
            }
        };
        match (held, current.is_some()) {
            (true, false) => {
                tracing::info!(identity = %lock.identity, "became the leader");
                let (stop, stopped) = watch::channel(false);
                current = Some((stop, tokio::spawn(lead(stopped))));
                leading.send_replace(true);
            }
            (false, true) => {
                tracing::warn!(identity = %lock.identity, "lost the lease; stopping the reconcilers");
                if let Some((stop, task)) = current.take() {
                    stop.send_replace(true);
                    let _ = task.await;
                }
                leading.send_replace(false);
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_PERIOD) => {}
            () = crate::api::stopped(&mut shutdown) => break,
        }
    }
    if let Some((stop, task)) = current.take() {
        stop.send_replace(true);
        let _ = task.await;
        lock.release().await;
    }
    leading.send_replace(false);
}
