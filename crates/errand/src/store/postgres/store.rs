//! [`Store`] and [`Inspect`] for [`PgStore`]: each operation its statement (claims grouped
//! by [`ClaimQueue`], jobs handed off to idle workers), its rows decoded.

use tokio_postgres::types::ToSql;

use super::*;

impl PgStore {
    async fn complete_job(
        &self,
        lease: &LeaseToken,
        completion: Completion,
    ) -> Result<(), StoreError> {
        let key = lease.key.as_bytes().as_slice();
        let (job, token) = (i64_of(lease.job.0), i64_of(lease.token));
        let rows = match &completion {
            Completion::Store(c) | Completion::Deliver { content: c, .. } => {
                let r = &c.response;
                let status = i16::try_from(r.status.as_u16()).unwrap_or(0);
                let headers = encode_headers(r);
                let body: &[u8] = &r.body;
                let [generated, fresh, stale, sie] = [
                    c.generated_at,
                    c.fresh_until,
                    c.stale_until,
                    c.stale_if_error_until,
                ]
                .map(ms);
                let job_millis = i64_of(c.job_millis);
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                    &key,
                    &job,
                    &token,
                    &status,
                    &headers,
                    &body,
                    &generated,
                    &fresh,
                    &stale,
                    &sie,
                    &job_millis,
                    &c.tags,
                ];
                // A delivery adds the end of its pass and its reason.
                let delivery = match &completion {
                    Completion::Deliver { pass, .. } => Some((ms(pass.until), &pass.reason)),
                    _ => None,
                };
                let statement = match &delivery {
                    Some((until, reason)) => {
                        params.extend([until as &(dyn ToSql + Sync), *reason]);
                        &self.sql.complete_deliver
                    }
                    None => &self.sql.complete_store,
                };
                self.query(statement, &params).await?
            }
            Completion::Fail(f) => {
                let r = &f.response;
                let status = i16::try_from(r.status.as_u16()).unwrap_or(0);
                let headers = encode_headers(r);
                let body: &[u8] = &r.body;
                let attempts = i32::try_from(f.attempts).unwrap_or(i32::MAX);
                self.query(
                    &self.sql.complete_fail,
                    &[
                        &key,
                        &job,
                        &token,
                        &ms(f.until),
                        &status,
                        &headers,
                        &body,
                        &f.error,
                        &attempts,
                        &ms(f.at),
                    ],
                )
                .await?
            }
            Completion::Pass(p) => {
                let status = p
                    .once
                    .as_ref()
                    .map(|r| i16::try_from(r.status.as_u16()).unwrap_or(0));
                let headers = p.once.as_ref().map(|r| encode_headers(r));
                let body = p.once.as_ref().map(|r| r.body.to_vec());
                self.query(
                    &self.sql.complete_pass,
                    &[
                        &key,
                        &job,
                        &token,
                        &ms(p.until),
                        &status,
                        &headers,
                        &body,
                        &p.reason,
                    ],
                )
                .await?
            }
            Completion::Retry { run_at, error } => {
                self.query(
                    &self.sql.complete_retry,
                    &[&key, &job, &token, &ms(*run_at), error],
                )
                .await?
            }
        };
        let Some(row) = rows.first() else {
            return Err(StoreError::LeaseLost);
        };
        match &completion {
            Completion::Retry { run_at, .. } => {
                // Ready now: this process's workers look at once. A later retry is found
                // when they look again (within the recheck).
                if *run_at <= self.now() {
                    self.work.announce();
                }
                return Ok(());
            }
            // Waiters of this process at once, with the entry so they need no read.
            Completion::Store(content) => {
                self.wake_stored(lease.key, row, content, Status::Idle);
            }
            Completion::Deliver { content, pass } => {
                self.wake_stored(lease.key, row, content, Status::Pass(pass.clone()));
            }
            Completion::Fail(failure) => self.wake_failed(lease.key, row, failure),
            _ => self.wakeups.wake(&lease.key),
        }
        // Those elsewhere through NOTIFY.
        self.announcer.done(lease.key);
        Ok(())
    }
}

#[async_trait]
impl Inspect for PgStore {
    async fn stats(&self) -> Result<Stats, StoreError> {
        let now = ms(self.now());
        let rows = self.query(&self.sql.stats, &[&now]).await?;
        let row = rows.first().ok_or_else(|| corrupt("stats"))?;
        let n = |name: &str| -> Result<u64, StoreError> {
            let v: i64 = row
                .try_get(name)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok(Stats {
            fresh: n("fresh")?,
            stale: n("stale")?,
            pending: n("pending")?,
            failed: n("failed")?,
            pass: n("pass")?,
            bytes: n("bytes")?,
            ready: n("ready")?,
            scheduled: n("scheduled")?,
            running: n("running")?,
            oldest_ready_ms: n("oldest")?,
        })
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let after: Vec<u8> = match &query.after {
            Some(cursor) => Key::parse(cursor)
                .ok_or_else(|| {
                    StoreError::Invalid(format!("{cursor:?} is not a cursor of this store"))
                })?
                .as_bytes()
                .to_vec(),
            None => Vec::new(),
        };
        // The same state rules as `stats`; $1 is now. Keyset paging on the primary key.
        let verdict = "(v_kind IN (1, 2) AND v_until > $1)";
        let state = match query.state {
            None => "true".to_owned(),
            Some(State::Pending) => "pending".to_owned(),
            Some(State::Failed) => "NOT pending AND v_kind = 1 AND v_until > $1".to_owned(),
            Some(State::Pass) => "NOT pending AND v_kind = 2 AND v_until > $1".to_owned(),
            Some(State::Fresh) => {
                format!("NOT pending AND NOT {verdict} AND c_fresh_until > $1")
            }
            Some(State::Stale) => {
                format!("NOT pending AND NOT {verdict} AND NOT COALESCE(c_fresh_until > $1, false)")
            }
        };
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM {}.entries
             WHERE (pending OR expires_at > $1) AND key > $2 AND {state}
             ORDER BY key LIMIT $3",
            self.config.schema
        );
        let now = ms(self.now());
        let limit = i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX);
        let rows = self.query(&sql, &[&now, &after.as_slice(), &limit]).await?;
        let entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if rows.len() as i64 == limit {
            entries.last().map(|e| e.key.to_hex())
        } else {
            None
        };
        Ok(ListPage { entries, next })
    }
}

#[async_trait]
impl Store for PgStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let now = ms(self.now());
        let rows = self
            .query(&self.sql.lookup, &[&key.as_bytes().as_slice(), &now])
            .await?;
        rows.first().map(entry_from_row).transpose()
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let now = self.now();
        let now_ms = ms(now);
        let request = serde_json::to_string(&claim.request).map_err(|e| corrupt(&e.to_string()))?;
        let expect = claim.expect.map(i64_of);
        let key = claim.key.as_bytes().as_slice();
        let priority = claim.priority as i16;
        let _place = self.admit().await?;
        // A worker of this process is idle: lease it the job in this very statement.
        let mut handoff = self.handoff.reserve().map(|r| (ms(now.plus(r.lease)), r));
        // Twice at most: if the row the conflict found is pruned before we read it, the
        // second claim meets no conflict.
        for _ in 0..2 {
            let won = match &handoff {
                Some((until, _)) => self
                    .query(
                        &self.sql.claim_leased,
                        &[
                            &key, &claim.uri, &priority, &now_ms, &request, &expect, until,
                        ],
                    )
                    .await?
                    .into_iter()
                    .next(),
                // Alone, or with the claims made while others were on their way.
                None => {
                    self.claims
                        .claim(ClaimParams {
                            key: claim.key,
                            uri: claim.uri.clone(),
                            priority,
                            now: now_ms,
                            request: request.clone(),
                            expect,
                        })
                        .await?
                }
            };
            if let Some(row) = &won {
                let leased_until = handoff.as_ref().map(|(until, _)| ts(*until));
                let entry = claimed_entry(&claim, now, leased_until, row)?;
                if let Some((until, reservation)) = handoff.take() {
                    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
                    let id: i64 = row.try_get("job_id").map_err(get)?;
                    let token: i64 = row.try_get("lease_token").map_err(get)?;
                    reservation.fill(Job {
                        lease: LeaseToken {
                            key: claim.key,
                            job: JobId(u64::try_from(id).unwrap_or(0)),
                            token: u64::try_from(token).unwrap_or(0),
                        },
                        lease_until: ts(until),
                        request: claim.request,
                        priority: claim.priority,
                        attempt: 1,
                        created_at: now,
                        redelivered: false,
                    });
                    // Only a worker of this process can run it: no one else to tell, and
                    // nothing new in the queue. One idle worker was counted for it.
                    self.work.wake.notify_one();
                } else {
                    // A worker of this process at once; those elsewhere through NOTIFY.
                    self.work.announce_one();
                    self.announcer.job();
                }
                return Ok(ClaimOutcome::Enqueued(entry));
            }
            let rows = self.query(&self.sql.find, &[&key]).await?;
            if let Some(row) = rows.first() {
                let entry = entry_from_row(row)?;
                // A lost claim's statement locked the row for a moment (ON CONFLICT DO
                // UPDATE locks the row it finds even when its WHERE changes nothing), and a
                // worker woken by the winning claim skips locked rows. Now that the lock is
                // gone, tell the workers again while the job waits for one.
                if entry
                    .job()
                    .is_some_and(|job| job.lease_until.is_none_or(|until| until <= now))
                {
                    self.work.announce();
                    self.announcer.job();
                }
                return Ok(ClaimOutcome::Exists(entry));
            }
        }
        Err(StoreError::unavailable(
            "the entry kept changing during claim",
        ))
    }

    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        let handed = self.handoff.take(max, lease);
        if !handed.is_empty() {
            return Ok(handed);
        }
        let now = self.now();
        let until = ms(now.plus(lease));
        let mut jobs = Vec::new();
        // A lease running out announces nothing: look for lapsed ones once per recheck.
        if self.work.rescue_due(now, self.config.recheck) {
            let limit = i64::try_from(max).unwrap_or(i64::MAX);
            let rows = self
                .query(&self.sql.take_lapsed, &[&ms(now), &limit, &until])
                .await?;
            jobs = jobs_of(&rows, true)?;
        }
        let wanted = max - jobs.len();
        if wanted > 0 && !self.work.known_empty(now, self.config.recheck) {
            let seen = self.work.seen();
            let limit = i64::try_from(wanted).unwrap_or(i64::MAX);
            let rows = self
                .query(&self.sql.take, &[&ms(now), &limit, &until])
                .await?;
            self.work
                .drained((rows.len() < wanted).then_some((seen, now)));
            jobs.extend(jobs_of(&rows, false)?);
        }
        // UPDATE … RETURNING has no order; hand them out as picked.
        jobs.sort_by_key(|(run_at, job)| (job.priority, *run_at));
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn heartbeat(
        &self,
        lease: &LeaseToken,
        extend: Duration,
    ) -> Result<Timestamp, StoreError> {
        let until = ms(self.now().plus(extend));
        let rows = self
            .query(
                &self.sql.heartbeat,
                &[
                    &lease.key.as_bytes().as_slice(),
                    &i64_of(lease.job.0),
                    &i64_of(lease.token),
                    &until,
                ],
            )
            .await?;
        if rows.is_empty() {
            return Err(StoreError::LeaseLost);
        }
        Ok(ts(until))
    }

    async fn complete(
        &self,
        mut jobs: Vec<(LeaseToken, Completion)>,
    ) -> Vec<Result<(), StoreError>> {
        // One alone takes the single-row statement, which finds its row by key directly.
        if jobs.len() == 1
            && let Some((lease, completion)) = jobs.pop()
        {
            return vec![self.complete_job(&lease, completion).await];
        }
        // Stored results go in one statement; anything else (rare) one by one.
        let (stored, other): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .enumerate()
            .partition(|(_, (_, c))| matches!(c, Completion::Store(_)));
        let mut results: Vec<Option<Result<(), StoreError>>> =
            (0..stored.len() + other.len()).map(|_| None).collect();
        for (i, (lease, completion)) in other {
            results[i] = Some(self.complete_job(&lease, completion).await);
        }
        if !stored.is_empty() {
            // In key order, as grouped claims lock rows: two statements never wait on each
            // other's rows.
            let mut stored = stored;
            stored.sort_by_key(|(_, (lease, _))| lease.key);
            let mut keys = Vec::new();
            let (mut job_ids, mut tokens, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
            let (mut headers, mut bodies) = (Vec::new(), Vec::new());
            let (mut generated, mut fresh, mut stale, mut sie) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut millis, mut tags) = (Vec::new(), Vec::new());
            for (_, (lease, completion)) in &stored {
                let Completion::Store(c) = completion else {
                    continue;
                };
                keys.push(lease.key.as_bytes().to_vec());
                job_ids.push(i64_of(lease.job.0));
                tokens.push(i64_of(lease.token));
                statuses.push(i16::try_from(c.response.status.as_u16()).unwrap_or(0));
                headers.push(encode_headers(&c.response));
                bodies.push(c.response.body.to_vec());
                generated.push(ms(c.generated_at));
                fresh.push(ms(c.fresh_until));
                stale.push(ms(c.stale_until));
                sie.push(ms(c.stale_if_error_until));
                millis.push(i64_of(c.job_millis));
                tags.push(c.tags.join("\u{1f}"));
            }
            let outcome = self
                .query(
                    &self.sql.complete_store_many,
                    &[
                        &keys, &job_ids, &tokens, &statuses, &headers, &bodies, &generated, &fresh,
                        &stale, &sie, &millis, &tags,
                    ],
                )
                .await;
            match outcome {
                Ok(rows) => {
                    let done: std::collections::HashMap<Vec<u8>, &Row> = rows
                        .iter()
                        .filter_map(|r| Some((r.try_get::<_, Vec<u8>>("key").ok()?, r)))
                        .collect();
                    let mut again = Vec::new();
                    for (i, (lease, completion)) in &stored {
                        match (done.get(lease.key.as_bytes().as_slice()), completion) {
                            (Some(row), Completion::Store(content)) => {
                                self.wake_stored(lease.key, row, content, Status::Idle);
                                self.announcer.done(lease.key);
                                results[*i] = Some(Ok(()));
                            }
                            _ => again.push((*i, lease, completion)),
                        }
                    }
                    // Left out: its lease is lost, or its row changed after it was found (a
                    // heartbeat that was on its way). The single statement tells which.
                    for (i, lease, completion) in again {
                        results[i] = Some(self.complete_job(lease, completion.clone()).await);
                    }
                }
                Err(e) => {
                    // One failed statement answers every job in it, cause and all.
                    for (i, _) in &stored {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::unavailable("not completed"))))
            .collect()
    }

    async fn wait(
        &self,
        key: &Key,
        seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        // Without LISTEN the wake-ups never say they hear everything, so waiters look first.
        self.wakeups
            .wait(key, seen, timeout, Some(self.config.recheck), || {
                self.lookup(key)
            })
            .await
    }

    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError> {
        let _idle = self.handoff.idle();
        let notified = self.work.wake.notified();
        // A job handed over, or announced since the last take found nothing.
        if self.handoff.has_jobs() || self.work.announced_since_drained() {
            return Ok(());
        }
        let _ = tokio::time::timeout(timeout.min(self.config.recheck), notified).await;
        Ok(())
    }

    async fn hand_back_unstarted(&self) -> Result<usize, StoreError> {
        // With no worker idle no claim reserves a hand-off, so only those on their way
        // remain, each within one call.
        let jobs = self.handoff.drain(self.config.call_timeout).await;
        let mut handed_back = 0;
        let mut failed = None;
        for job in jobs {
            let lease = &job.lease;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [
                &lease.key.as_bytes().as_slice(),
                &i64_of(lease.job.0),
                &i64_of(lease.token),
            ];
            match self.query(&self.sql.hand_back, &params).await {
                Ok(rows) => handed_back += rows.len(),
                // Its lease runs out in time and another worker takes it then.
                Err(e) => failed = Some(e),
            }
        }
        if handed_back > 0 {
            self.work.announce();
            self.announcer.job();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(handed_back),
        }
    }

    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        let now = ms(self.now());
        let rows = self
            .query(&self.sql.take_once, &[&key.as_bytes().as_slice(), &now])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
        response(
            row.try_get("v_status").map_err(get)?,
            row.try_get("v_headers").map_err(get)?,
            row.try_get("v_body").map_err(get)?,
        )
    }

    async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        let t = format!("{}.entries", self.config.schema);
        let ids = format!("{}.ids", self.config.schema);
        let now = ms(self.now());
        // The target's value is the last parameter: $2 in the soft purge, $1 in the hard one.
        let (slot, mut params): (usize, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) =
            if purge.soft {
                (2, vec![&now])
            } else {
                (1, Vec::new())
            };
        let key_bytes;
        let condition = match &purge.target {
            PurgeTarget::Key(key) => {
                key_bytes = key.as_bytes().to_vec();
                params.push(&key_bytes);
                format!("key = ${slot}")
            }
            PurgeTarget::Uri(uri) => {
                params.push(uri);
                format!("uri = ${slot}")
            }
            PurgeTarget::Prefix(prefix) => {
                params.push(prefix);
                format!("starts_with(uri, ${slot})")
            }
            PurgeTarget::Tag(tag) => {
                params.push(tag);
                format!("${slot} = ANY(tags)")
            }
            PurgeTarget::All => "true".to_owned(),
        };
        // First the fence: a job running since before this invalidation may have read what
        // the write replaced, so its lease is revoked (its completion will be refused) and it
        // is ready again at once (its next take is another attempt, as a redelivery is).
        // Before the purge of settled rows, so a
        // job that completes in between is purged as a settled row.
        let requeue = format!(
            "UPDATE {t} SET lease_token = NULL, lease_until = NULL, version = nextval('{ids}')
             WHERE ({}) AND pending AND lease_token IS NOT NULL
             RETURNING 1",
            condition.replace(&format!("${slot}"), "$1")
        );
        let requeued = self.query(&requeue, &params[slot - 1..]).await?.len();
        if requeued > 0 {
            self.work.announce();
            self.announcer.job();
        }
        let requeued = u64::try_from(requeued).unwrap_or(0);
        if purge.soft {
            // Stale from now on, keeping the lengths of its stale windows.
            let sql = format!(
                "UPDATE {t} SET
                   c_stale_until = $1 + (c_stale_until - c_fresh_until),
                   c_sie_until = $1 + (c_sie_until - c_fresh_until),
                   c_fresh_until = $1,
                   version = nextval('{ids}'),
                   expires_at = CASE WHEN pending THEN NULL ELSE GREATEST(
                     $1 + (c_stale_until - c_fresh_until), $1 + (c_sie_until - c_fresh_until),
                     COALESCE(v_until, 0)) END
                 WHERE ({condition}) AND c_status IS NOT NULL AND c_fresh_until > $1
                 RETURNING 1"
            );
            let rows = self.query(&sql, &params).await?;
            return Ok(u64::try_from(rows.len()).unwrap_or(0) + requeued);
        }
        // Settled rows go; a live job stays (its result will land), losing its stale copy.
        let sql = format!(
            "WITH gone AS (DELETE FROM {t} WHERE ({condition}) AND NOT pending RETURNING 1),
                  kept AS (UPDATE {t} SET c_status = NULL, c_headers = NULL, c_body = NULL,
                             version = nextval('{ids}')
                           WHERE ({condition}) AND pending AND c_status IS NOT NULL
                           RETURNING 1)
             SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM kept)"
        );
        let rows = self.query(&sql, &params).await?;
        let count: i64 = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0) + requeued)
    }
}
