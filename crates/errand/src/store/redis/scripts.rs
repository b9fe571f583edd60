//! The Lua scripts and how they are called: one script per operation that changes more
//! than one key, each prefixed with `prelude.lua`, and the arguments they read.

use super::*;

/// The scripts, each with the shared prelude.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) take: Script,
    pub(super) heartbeat: Script,
    pub(super) complete: Script,
    pub(super) take_once: Script,
    pub(super) purge: Script,
    pub(super) prune: Script,
    pub(super) stats: Script,
    pub(super) list: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let with = |body: &str| Script::new(&format!("{}\n{body}", include_str!("prelude.lua")));
        Self {
            claim: with(include_str!("claim.lua")),
            take: with(include_str!("take.lua")),
            heartbeat: with(include_str!("heartbeat.lua")),
            complete: with(include_str!("complete.lua")),
            take_once: with(include_str!("take_once.lua")),
            purge: with(include_str!("purge.lua")),
            prune: with(include_str!("prune.lua")),
            stats: with(include_str!("stats.lua")),
            list: with(include_str!("list.lua")),
        }
    }
}

impl RedisStore {
    /// Runs one command under the call timeout.
    pub(super) async fn call(&self, cmd: ::redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        timed(self.config.call_timeout, async move {
            cmd.query_async(&mut conn).await.map_err(redis_error)
        })
        .await
    }

    /// Runs a pipeline of commands in one round trip, under the call timeout.
    pub(super) async fn pipeline(&self, pipe: ::redis::Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut conn = self.conn.clone();
        timed(self.config.call_timeout, async move {
            pipe.query_async(&mut conn).await.map_err(redis_error)
        })
        .await
    }

    /// Runs one script with `args` after the prefix, under the call timeout.
    pub(super) async fn script(
        &self,
        script: &Script,
        args: Vec<Arg<'_>>,
    ) -> Result<Value, StoreError> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.tag);
        for arg in &args {
            match arg {
                Arg::Text(s) => invocation.arg(s.as_bytes()),
                Arg::Owned(b) => invocation.arg(b.as_slice()),
                Arg::Bytes(b) => invocation.arg(*b),
                Arg::Num(n) => invocation.arg(*n),
            };
        }
        let mut conn = self.conn.clone();
        timed(self.config.call_timeout, async move {
            invocation
                .invoke_async::<Value>(&mut conn)
                .await
                .map_err(redis_error)
        })
        .await
    }
}

/// One script argument.
pub(super) enum Arg<'a> {
    Text(&'a str),
    Owned(Vec<u8>),
    Bytes(&'a [u8]),
    Num(u64),
}

/// The latest time (ms since the epoch, in the year 5138) given to a script. Lua keeps numbers
/// as doubles and writes them back with `%.14g`, so a larger integer would come back as
/// `1e+14`: `PEXPIRE` would refuse it part-way through a script, and a field holding it could
/// not be read again. Lifetimes are clamped long before this (2^31 s, RFC 9111 §1.2.2); the
/// bound keeps any [`Completion`] a caller builds within what the scripts can apply whole.
pub(super) const LATEST_FOR_LUA: u64 = 99_999_999_999_999;

/// A time as a script argument, bounded by [`LATEST_FOR_LUA`].
pub(super) fn time_arg<'a>(t: Timestamp) -> Arg<'a> {
    Arg::Num(t.0.min(LATEST_FOR_LUA))
}

pub(super) fn redis_error(e: ::redis::RedisError) -> StoreError {
    StoreError::unavailable_because(format!("redis: {e}"), e)
}

pub(super) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStore {
    /// One completion as the 15 arguments `complete.lua` reads.
    pub(super) fn completion_args<'a>(
        lease: &LeaseToken,
        completion: &'a Completion,
        args: &mut Vec<Arg<'a>>,
    ) {
        args.push(Arg::Owned(lease.key.to_hex().into_bytes()));
        args.push(Arg::Num(lease.job.0));
        args.push(Arg::Num(lease.token));
        let blank = |args: &mut Vec<Arg<'a>>, n: usize| {
            for _ in 0..n {
                args.push(Arg::Text(""));
            }
        };
        match completion {
            Completion::Store(c) | Completion::Deliver { content: c, .. } => {
                let r = &c.response;
                let deliver = matches!(completion, Completion::Deliver { .. });
                args.push(Arg::Text(if deliver { "d" } else { "s" }));
                args.push(Arg::Num(u64::from(r.status.as_u16())));
                args.push(Arg::Owned(encode_headers(r)));
                args.push(Arg::Bytes(&r.body));
                args.push(time_arg(c.generated_at));
                args.push(time_arg(c.fresh_until));
                args.push(time_arg(c.stale_until));
                args.push(time_arg(c.stale_if_error_until));
                args.push(Arg::Num(c.job_millis));
                args.push(Arg::Owned(c.tags.join("\u{1f}").into_bytes()));
            }
            Completion::Fail(f) => {
                let r = &f.response;
                args.push(Arg::Text("f"));
                args.push(Arg::Num(u64::from(r.status.as_u16())));
                args.push(Arg::Owned(encode_headers(r)));
                args.push(Arg::Bytes(&r.body));
                args.push(time_arg(f.until));
                args.push(Arg::Num(u64::from(f.attempts)));
                args.push(time_arg(f.at));
                blank(args, 2);
                args.push(Arg::Text(&f.error));
            }
            Completion::Pass(p) => {
                args.push(Arg::Text("p"));
                match &p.once {
                    Some(r) => {
                        args.push(Arg::Num(u64::from(r.status.as_u16())));
                        args.push(Arg::Owned(encode_headers(r)));
                        args.push(Arg::Bytes(&r.body));
                    }
                    None => blank(args, 3),
                }
                args.push(time_arg(p.until));
                blank(args, 4);
                args.push(Arg::Text(&p.reason));
            }
            Completion::Retry { run_at, error } => {
                args.push(Arg::Text("r"));
                blank(args, 3);
                args.push(time_arg(*run_at));
                blank(args, 4);
                args.push(Arg::Text(error));
            }
        }
        // Only a delivery has a pass beside its content.
        match completion {
            Completion::Deliver { pass, .. } => {
                args.push(time_arg(pass.until));
                args.push(Arg::Text(&pass.reason));
            }
            _ => blank(args, 2),
        }
    }
}
