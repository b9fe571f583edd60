//! [`Store`] and [`Inspect`] for [`RedisStore`]: each operation one script call (or one
//! command), its reply decoded.

use super::*;

#[async_trait]
impl Inspect for RedisStore {
    async fn stats(&self) -> Result<Stats, StoreError> {
        let now = self.now().0;
        let mut stats = Stats::default();
        let mut cursor = String::new();
        let mut first = true;
        loop {
            let reply = self
                .script(
                    &self.scripts.stats,
                    vec![Arg::Num(now), Arg::Text(&cursor), Arg::Num(1000)],
                )
                .await?;
            let parts = array(&reply)?;
            let n = |i: usize| parts.get(i).and_then(int).unwrap_or(0);
            stats.fresh += n(1);
            stats.stale += n(2);
            stats.pending += n(3);
            stats.failed += n(4);
            stats.pass += n(5);
            stats.bytes += n(6);
            if first {
                first = false;
                stats.ready = n(7);
                stats.scheduled = n(8);
                stats.running = n(9);
                stats.oldest_ready_ms = parts
                    .get(10)
                    .and_then(signed)
                    .filter(|t| *t >= 0)
                    .map_or(0, |t| now.saturating_sub(u64::try_from(t).unwrap_or(now)));
            }
            cursor = parts.first().map(text).unwrap_or_default();
            if cursor.is_empty() {
                return Ok(stats);
            }
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let cursor = query.after.clone().unwrap_or_default();
        if !cursor.is_empty()
            && cursor
                .rsplit_once('\n')
                .is_none_or(|(_, hex)| Key::parse(hex).is_none())
        {
            return Err(StoreError::Invalid(format!(
                "{cursor:?} is not a cursor of this store"
            )));
        }
        let limit = query.limit.max(1) as u64;
        let state = query.state.map_or("", State::as_str);
        // One script call walks at most this many index records, so a listing of a rare
        // state never holds Redis for long; the caller follows `next`.
        let budget = (limit * 20).clamp(1_000, 10_000);
        let reply = self
            .script(
                &self.scripts.list,
                vec![
                    Arg::Num(self.now().0),
                    Arg::Text(&cursor),
                    Arg::Num(limit),
                    Arg::Text(state),
                    Arg::Num(budget),
                ],
            )
            .await?;
        let parts = array(&reply)?;
        let keys = parts.first().map(array).transpose()?.unwrap_or_default();
        let next = parts.get(1).map(text).filter(|c| !c.is_empty());
        let keys = keys
            .iter()
            .map(|k| Key::parse(&text(k)).ok_or_else(|| corrupt("listed key")))
            .collect::<Result<Vec<_>, _>>()?;
        // The entries themselves, in one round trip.
        let mut pipe = ::redis::pipe();
        for key in &keys {
            pipe.cmd("HGETALL")
                .arg(format!("{}e:{}", self.tag, key.to_hex()));
        }
        let replies: Vec<Value> = if keys.is_empty() {
            Vec::new()
        } else {
            self.pipeline(pipe).await?
        };
        let mut entries = Vec::with_capacity(keys.len());
        for (key, reply) in keys.iter().zip(&replies) {
            // An entry that settled, expired or was purged since the walk is skipped.
            if let Some(entry) = Self::read_entry(key, reply)?
                && query.state.is_none_or(|s| entry.state(self.now()) == s)
            {
                entries.push(entry);
            }
        }
        Ok(ListPage { entries, next })
    }
}

#[async_trait]
impl Store for RedisStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(format!("{}e:{}", self.tag, key.to_hex()));
        let reply = self.call(cmd).await?;
        let now = self.now();
        Ok(Self::read_entry(key, &reply)?.filter(|e| e.expires_at().is_none_or(|x| x > now)))
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let request = serde_json::to_string(&claim.request).map_err(|e| corrupt(&e.to_string()))?;
        let expect = claim.expect.map(|v| v.to_string()).unwrap_or_default();
        let now = self.now();
        let reply = self
            .script(
                &self.scripts.claim,
                vec![
                    Arg::Owned(claim.key.to_hex().into_bytes()),
                    Arg::Text(&claim.uri),
                    Arg::Num(claim.priority as u64),
                    Arg::Num(now.0),
                    Arg::Text(&request),
                    Arg::Text(&expect),
                    Arg::Num(u64::try_from(self.config.max_pending).unwrap_or(u64::MAX)),
                ],
            )
            .await?;
        let parts = array(&reply)?;
        if let [refused, pending] = parts
            && int(refused) == Some(2)
        {
            return Err(StoreError::Full(int(pending).unwrap_or(0)));
        }
        let won = parts.first().and_then(int) == Some(1);
        let entry = match parts {
            // A new entry: the script returns its version and job id only.
            [_, version, job] => Entry {
                key: claim.key,
                uri: claim.uri.as_str().into(),
                version: int(version).ok_or_else(|| corrupt("claim version"))?,
                content: None,
                status: Status::Pending(JobInfo::claimed(
                    JobId(int(job).ok_or_else(|| corrupt("claim job"))?),
                    claim.priority,
                    now,
                    false,
                )),
            },
            [_, fields] => {
                Self::read_entry(&claim.key, fields)?.ok_or_else(|| corrupt("claim entry"))?
            }
            _ => return Err(corrupt("claim reply")),
        };
        if won {
            // Workers of this process at once; those elsewhere through pub/sub.
            self.work.notify_waiters();
            Ok(ClaimOutcome::Enqueued(entry))
        } else {
            Ok(ClaimOutcome::Exists(entry))
        }
    }

    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        let now = self.now();
        let until = now.plus(lease);
        let reply = self
            .script(
                &self.scripts.take,
                vec![
                    Arg::Num(now.0),
                    Arg::Num(u64::try_from(max).unwrap_or(u64::MAX)),
                    Arg::Num(until.0),
                ],
            )
            .await?;
        let mut jobs = Vec::new();
        for job in array(&reply)? {
            let f = array(job)?;
            let field = |i: usize| f.get(i).ok_or_else(|| corrupt("take reply"));
            let key = Key::parse(&text(field(0)?)).ok_or_else(|| corrupt("key"))?;
            let request: RequestRecord = serde_json::from_slice(
                bytes(field(3)?).ok_or_else(|| corrupt("job without a request"))?,
            )
            .map_err(|e| corrupt(&e.to_string()))?;
            let run_at = int(field(7)?).unwrap_or(0);
            jobs.push((
                run_at,
                Job {
                    lease: LeaseToken {
                        key,
                        job: JobId(int(field(1)?).unwrap_or(0)),
                        token: int(field(2)?).ok_or_else(|| corrupt("lease token"))?,
                    },
                    lease_until: until,
                    request,
                    priority: priority(int(field(4)?).unwrap_or(0)),
                    attempt: u32::try_from(int(field(5)?).unwrap_or(1)).unwrap_or(u32::MAX),
                    created_at: Timestamp(int(field(6)?).unwrap_or(0)),
                    redelivered: int(field(8)?) == Some(1),
                },
            ));
        }
        jobs.sort_by_key(|(run_at, job)| (job.priority, *run_at));
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn heartbeat(
        &self,
        lease: &LeaseToken,
        extend: Duration,
    ) -> Result<Timestamp, StoreError> {
        let until = self.now().plus(extend);
        let reply = self
            .script(
                &self.scripts.heartbeat,
                vec![
                    Arg::Owned(lease.key.to_hex().into_bytes()),
                    Arg::Num(lease.job.0),
                    Arg::Num(lease.token),
                    Arg::Num(until.0),
                ],
            )
            .await?;
        if int(&reply) == Some(1) {
            Ok(until)
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    async fn complete(&self, jobs: Vec<(LeaseToken, Completion)>) -> Vec<Result<(), StoreError>> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let mut args = Vec::with_capacity(1 + jobs.len() * 15);
        args.push(Arg::Num(self.now().0));
        for (lease, completion) in &jobs {
            Self::completion_args(lease, completion, &mut args);
        }
        let reply = self.script(&self.scripts.complete, args).await;
        // Per job: 0, lease lost; 1, done; a string, a stored result done, and its URI.
        let done: Result<Vec<Option<Option<String>>>, StoreError> = reply.and_then(|v| {
            let flags: Vec<_> = array(&v)?
                .iter()
                .map(|f| match f {
                    Value::Int(1) => Some(None),
                    Value::Int(_) => None,
                    uri => Some(Some(text(uri)).filter(|u| !u.is_empty())),
                })
                .collect();
            if flags.len() == jobs.len() {
                Ok(flags)
            } else {
                Err(corrupt("complete reply"))
            }
        });
        let now = self.now();
        match done {
            Ok(flags) => jobs
                .into_iter()
                .zip(flags)
                .map(|((lease, completion), done)| {
                    let Some(uri) = done else {
                        return Err(StoreError::LeaseLost);
                    };
                    // Waiters of this process at once, with the entry when it is known, so
                    // they need no read; those elsewhere through pub/sub.
                    match (completion, uri) {
                        (Completion::Retry { .. }, _) => {}
                        (Completion::Store(content), Some(uri)) if content.expires_at() > now => {
                            self.wakeups.wake_settled(Entry {
                                key: lease.key,
                                uri: uri.into(),
                                // The lease token becomes the entry's version.
                                version: lease.token,
                                content: Some(content),
                                status: Status::Idle,
                            });
                        }
                        (Completion::Deliver { content, pass }, Some(uri)) => {
                            self.wakeups.wake_settled(Entry {
                                key: lease.key,
                                uri: uri.into(),
                                version: lease.token,
                                content: Some(content),
                                status: Status::Pass(pass),
                            });
                        }
                        // Over as it is stored (an error TTL of 0): a lookup finds nothing, so
                        // the waiters of this process get the failure itself.
                        (Completion::Fail(failure), Some(uri)) if failure.until <= now => {
                            self.wakeups.wake_settled(Entry {
                                key: lease.key,
                                uri: uri.into(),
                                version: lease.token,
                                content: None,
                                status: Status::Failed(failure),
                            });
                        }
                        _ => self.wakeups.wake(&lease.key),
                    }
                    Ok(())
                })
                .collect(),
            // One failed call answers every job in it, cause and all.
            Err(e) => jobs.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn wait(
        &self,
        key: &Key,
        seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        self.wakeups
            .wait(key, seen, timeout, Some(self.config.recheck), || {
                self.lookup(key)
            })
            .await
    }

    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError> {
        let notified = self.work.notified();
        let _ = tokio::time::timeout(timeout.min(self.config.recheck), notified).await;
        Ok(())
    }

    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        let reply = self
            .script(
                &self.scripts.take_once,
                vec![
                    Arg::Owned(key.to_hex().into_bytes()),
                    Arg::Num(self.now().0),
                ],
            )
            .await?;
        if matches!(reply, Value::Nil) {
            return Ok(None);
        }
        let parts = array(&reply)?;
        let (Some(status), Some(headers), Some(body)) = (
            parts.first().and_then(int),
            parts.get(1).and_then(bytes),
            parts.get(2).and_then(bytes),
        ) else {
            return Err(corrupt("take_once reply"));
        };
        response(status, headers, body).map(Some)
    }

    async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        let (mode, target, mut cursor) = match &purge.target {
            PurgeTarget::Key(key) => ("k", key.to_hex(), String::new()),
            PurgeTarget::Uri(uri) => ("l", format!("{uri}\n"), String::new()),
            PurgeTarget::Prefix(prefix) => ("l", prefix.clone(), String::new()),
            PurgeTarget::Tag(tag) => ("t", tag.clone(), "0".to_owned()),
            PurgeTarget::All => ("l", String::new(), String::new()),
        };
        let soft = if purge.soft { "1" } else { "0" };
        let mut total = 0;
        loop {
            let reply = self
                .script(
                    &self.scripts.purge,
                    vec![
                        Arg::Num(self.now().0),
                        Arg::Text(soft),
                        Arg::Text(mode),
                        Arg::Text(&target),
                        Arg::Text(&cursor),
                        Arg::Num(500),
                    ],
                )
                .await?;
            let parts = array(&reply)?;
            total += parts.first().and_then(int).unwrap_or(0);
            cursor = parts.get(1).map(text).unwrap_or_default();
            if cursor.is_empty() {
                return Ok(total);
            }
        }
    }
}
