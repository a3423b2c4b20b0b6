//! `dispatch`: the charm's only executable. Juju runs it for every hook and action.

use std::process::ExitCode;

use concourse_ci::charm;
use concourse_ci::host::Host;
use concourse_ci::juju::{log, Context, Juju, ProcessRunner};

fn main() -> ExitCode {
    let ctx = match Context::from_process_env() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("concourse-ci: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::init(Box::new(ProcessRunner), &ctx.unit_name, ctx.debug);
    let what = ctx.describe();
    let juju = Juju::new(ctx, Box::new(ProcessRunner));
    match charm::dispatch(&juju, &Host::system()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain = concourse_ci::error_chain(&e);
            tracing::error!("{what} failed, Juju will retry: {chain}");
            ExitCode::FAILURE
        }
    }
}
