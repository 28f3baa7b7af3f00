//! `cluster up`: the e2e control plane for a developer, until Ctrl-C.

use clap::{Parser, Subcommand};
use daprs_e2e::Cluster;

/// A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager), the one
/// the e2e tests use.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the cluster, print how to reach it and keep it up until Ctrl-C.
    Up,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { command } = Args::parse();
    match command {
        Cmd::Up => up().await,
    }
}

async fn up() -> anyhow::Result<()> {
    eprintln!("starting etcd, kube-apiserver and kube-controller-manager ...");
    let cluster = Cluster::start().await?;
    let kubeconfig = cluster.kubeconfig().display();
    let bin = cluster.bin_dir().display();
    println!(
        "cluster up: {server}

  kubeconfig:  {kubeconfig}
  binaries:    {bin}   (kubectl, helm, ...)
  logs:        {dir}/{{etcd,kube-apiserver,kube-controller-manager}}.log

In another shell:

  export KUBECONFIG={kubeconfig} PATH={bin}:$PATH
  kubectl get ns

There is no kubelet: pods are admitted and stored but never run.
Ctrl-C stops the cluster and removes {dir} (set DAPRS_E2E_KEEP=1 to keep it).",
        server = cluster.connection().server_url(),
        dir = cluster.dir().display(),
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping");
    cluster.stop();
    Ok(())
}
