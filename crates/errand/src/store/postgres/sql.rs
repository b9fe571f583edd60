//! Every statement the store sends, and the schema's migrations.

/// Every statement, with the schema spliced in once.
pub(super) struct Sql {
    pub(super) channels: (String, String),
    pub(super) schema: String,
    pub(super) lookup: String,
    pub(super) claim: String,
    pub(super) claim_leased: String,
    pub(super) claim_group: String,
    pub(super) find: String,
    pub(super) take: String,
    pub(super) take_lapsed: String,
    pub(super) heartbeat: String,
    pub(super) hand_back: String,
    pub(super) complete_store: String,
    pub(super) complete_deliver: String,
    pub(super) complete_fail: String,
    pub(super) complete_pass: String,
    pub(super) complete_retry: String,
    pub(super) complete_store_many: String,
    pub(super) take_once: String,
    pub(super) stats: String,
    pub(super) count_pending: String,
}

/// The columns an [`Entry`](crate::pattern::Entry) is read from, in [`entry_from_row`](super::decode::entry_from_row)'s order.
pub(super) const ENTRY_COLUMNS: &str = "key, uri, version, pending, job_id, priority, created_at, run_at, \
     attempts, lease_until, last_error, after_failure, \
     c_status, c_headers, c_body, c_generated_at, c_fresh_until, c_stale_until, c_sie_until, \
     c_job_millis, tags, v_kind, v_until, v_status, v_headers, v_body, v_text, v_attempts, v_at, \
     CASE WHEN v_kind = 1 THEN request END AS request";

/// What a claim returns: the row's new version and job id, whether the entry was `failed`
/// before, and the copy it keeps (a stale copy the claim revalidates); the rest of the pending
/// entry is what the claim wrote ([`claimed_entry`](super::decode::claimed_entry)).
pub(super) const CLAIM_COLUMNS: &str = "version, job_id, after_failure, c_status, c_headers, c_body, \
     c_generated_at, c_fresh_until, c_stale_until, c_sie_until, c_job_millis, tags";

/// What a claim that meets a row it may take over sets: the row becomes the pending entry the
/// insert would have made (its copy kept).
pub(super) const CLAIM_UPDATE: &str =
    "uri = EXCLUDED.uri, version = EXCLUDED.version, pending = true,
     job_id = EXCLUDED.job_id, priority = EXCLUDED.priority,
     created_at = EXCLUDED.created_at, run_at = EXCLUDED.run_at,
     attempts = EXCLUDED.attempts, lease_token = EXCLUDED.lease_token,
     lease_until = EXCLUDED.lease_until, last_error = NULL,
     request = EXCLUDED.request, after_failure = (e.v_kind = 1), expires_at = NULL";

/// The claim: `$1` key, `$2` uri, `$3` priority, `$4` now, `$5` request, `$6` expected
/// version. `leased` (a hand-off to an idle worker of this process) also leases the new job
/// in the same statement, its first attempt, until `$7`, and returns the lease token.
pub(super) fn claim_sql(t: &str, ids: &str, leased: bool) -> String {
    let (token, until, attempts, returning) = if leased {
        (format!("nextval('{ids}')"), "$7", 1, ", lease_token")
    } else {
        ("NULL".to_owned(), "NULL", 0, "")
    };
    format!(
        "INSERT INTO {t} AS e (key, uri, version, pending, job_id, priority, created_at, run_at,
                               attempts, lease_token, lease_until, request, after_failure,
                               expires_at)
         VALUES ($1, $2, nextval('{ids}'), true, nextval('{ids}'), $3, $4, $4, {attempts},
                 {token}, {until}::bigint, $5, false, NULL)
         ON CONFLICT (key) DO UPDATE SET {CLAIM_UPDATE}
         WHERE NOT e.pending AND (e.expires_at <= $4 OR e.version = $6)
         RETURNING {CLAIM_COLUMNS}{returning}"
    )
}

/// Claims of distinct keys in one statement, from arrays: `$1` keys, `$2` uris, `$3`
/// priorities, `$4` nows, `$5` requests, `$6` expected versions. The same insert or update,
/// row by row, as [`claim_sql`]'s unleased claim; each returned row carries its key. Rows
/// are inserted in key order (see [`ClaimQueue`](super::claims::ClaimQueue)).
pub(super) fn claim_group_sql(t: &str, ids: &str) -> String {
    format!(
        "WITH input AS (
           SELECT * FROM unnest($1::bytea[], $2::text[], $3::smallint[], $4::bigint[],
                                $5::text[], $6::bigint[])
             AS i(key, uri, priority, now, request, expect))
         INSERT INTO {t} AS e (key, uri, version, pending, job_id, priority, created_at, run_at,
                               attempts, lease_token, lease_until, request, after_failure,
                               expires_at)
         SELECT i.key, i.uri, nextval('{ids}'), true, nextval('{ids}'), i.priority, i.now, i.now,
                0, NULL, NULL, i.request, false, NULL
           FROM input i ORDER BY i.key
         ON CONFLICT (key) DO UPDATE SET {CLAIM_UPDATE}
         WHERE NOT e.pending
           AND (e.expires_at <= EXCLUDED.created_at
                OR e.version = (SELECT x.expect FROM input x WHERE x.key = e.key))
         RETURNING key, {CLAIM_COLUMNS}"
    )
}

/// The take: `$1` now, `$2` max, `$3` lease until. `lapsed` picks jobs whose lease ran out,
/// oldest lease first (redeliveries); otherwise ready jobs by priority then run time. Each is
/// served by its own partial index.
pub(super) fn take_sql(t: &str, ids: &str, lapsed: bool) -> String {
    let (filter, order) = if lapsed {
        (
            "lease_token IS NOT NULL AND lease_until <= $1",
            "lease_until",
        )
    } else {
        ("lease_token IS NULL AND run_at <= $1", "priority, run_at")
    };
    format!(
        "WITH picked AS (
           SELECT key FROM {t} WHERE pending AND {filter}
           ORDER BY {order} LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE {t} e SET lease_token = nextval('{ids}'), lease_until = $3,
                          attempts = e.attempts + 1
         FROM picked WHERE e.key = picked.key
         RETURNING e.key, e.job_id, e.lease_token, e.lease_until, e.request, e.priority,
                   e.attempts, e.created_at, e.run_at"
    )
}

/// A stored result: `$1` key, `$2` job, `$3` token, `$4`..`$12` the content. `deliver` (a
/// result stale on arrival, kept beside its one-time delivery) adds `$13` the end of the pass
/// and `$14` its reason; the delivery is the content's own status, headers and body.
fn complete_store_sql(t: &str, ids: &str, deliver: bool) -> String {
    let (verdict, expires_at) = if deliver {
        (
            "v_kind = 2, v_until = $13, v_status = $4, v_headers = $5, v_body = $6, v_text = $14",
            "GREATEST($8::bigint, $9::bigint, $10::bigint, $13::bigint)",
        )
    } else {
        (
            "v_kind = 0, v_until = NULL, v_status = NULL, v_headers = NULL, v_body = NULL,
                     v_text = NULL",
            "GREATEST($8::bigint, $9::bigint, $10::bigint)",
        )
    };
    format!(
        "UPDATE {t} SET pending = false, job_id = NULL, priority = NULL,
             lease_token = NULL, lease_until = NULL, request = NULL, last_error = NULL,
             attempts = 0, after_failure = false, version = nextval('{ids}'),
             c_status = $4, c_headers = $5, c_body = $6, c_generated_at = $7,
             c_fresh_until = $8, c_stale_until = $9, c_sie_until = $10,
             c_job_millis = $11, tags = $12,
             {verdict}, v_attempts = NULL, v_at = NULL,
             expires_at = {expires_at}
           WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
           RETURNING uri, version"
    )
}

impl Sql {
    pub(super) fn new(schema: &str) -> Self {
        let t = format!("{schema}.entries");
        let ids = format!("{schema}.ids");
        let done = format!("{schema}_done");
        let jobs = format!("{schema}_jobs");
        Self {
            lookup: format!(
                "SELECT {ENTRY_COLUMNS} FROM {t} WHERE key = $1 AND (pending OR expires_at > $2)"
            ),
            claim: claim_sql(&t, &ids, false),
            claim_leased: claim_sql(&t, &ids, true),
            claim_group: claim_group_sql(&t, &ids),
            find: format!("SELECT {ENTRY_COLUMNS} FROM {t} WHERE key = $1"),
            take: take_sql(&t, &ids, false),
            take_lapsed: take_sql(&t, &ids, true),
            heartbeat: format!(
                "UPDATE {t} SET lease_until = $4
                 WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                 RETURNING lease_until"
            ),
            // A handed-over job no worker started: ready again, as if never taken.
            hand_back: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL,
                   attempts = GREATEST(attempts - 1, 0)
                 WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                 RETURNING key"
            ),
            complete_store: complete_store_sql(&t, &ids, false),
            complete_deliver: complete_store_sql(&t, &ids, true),
            // The request stays with the failure, so an operator can retry it.
            complete_fail: format!(
                "UPDATE {t} SET pending = false, job_id = NULL, priority = NULL,
                     lease_token = NULL, lease_until = NULL, last_error = NULL,
                     attempts = 0, after_failure = false, version = nextval('{ids}'),
                     v_kind = 1, v_until = $4, v_status = $5, v_headers = $6, v_body = $7,
                     v_text = $8, v_attempts = $9, v_at = $10,
                     expires_at = GREATEST(COALESCE(c_fresh_until, 0), COALESCE(c_stale_until, 0),
                                           COALESCE(c_sie_until, 0), $4::bigint)
                   WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                   RETURNING key, uri, version, expires_at"
            ),
            complete_pass: format!(
                "UPDATE {t} SET pending = false, job_id = NULL, priority = NULL,
                     lease_token = NULL, lease_until = NULL, request = NULL, last_error = NULL,
                     attempts = 0, after_failure = false, version = nextval('{ids}'),
                     c_status = NULL, c_headers = NULL, c_body = NULL, c_generated_at = NULL,
                     c_fresh_until = NULL, c_stale_until = NULL, c_sie_until = NULL,
                     c_job_millis = NULL, tags = '{{}}',
                     v_kind = 2, v_until = $4, v_status = $5, v_headers = $6, v_body = $7,
                     v_text = $8, v_attempts = NULL, v_at = NULL, expires_at = $4
                   WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                   RETURNING key"
            ),
            // Many stored results in one statement: the same fenced update as complete_store,
            // row by row from arrays. Tags travel joined by U+001F, which no header can hold.
            // Each row is found by its own probe of the primary key (the LIMIT keeps the
            // planner from merging the probes into one scan of the table, a plan it would
            // keep for the connection's life if it first planned while the table was small),
            // then updated by its row id. A row updated meanwhile (a last heartbeat) is left
            // out, and the caller completes it again by key.
            complete_store_many: format!(
                "WITH input AS (
                   SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::smallint[],
                                        $5::bytea[], $6::bytea[], $7::bigint[], $8::bigint[],
                                        $9::bigint[], $10::bigint[], $11::bigint[], $12::text[])
                     AS i(key, job_id, token, status, headers, body, generated_at, fresh_until,
                          stale_until, sie_until, job_millis, tags)),
                 target AS (
                   SELECT i.*, found.row_id FROM input i
                   CROSS JOIN LATERAL (
                     SELECT ctid AS row_id FROM {t} x
                     WHERE x.key = i.key AND x.pending AND x.job_id = i.job_id
                       AND x.lease_token = i.token
                     LIMIT 1) found)
                 UPDATE {t} e SET pending = false, job_id = NULL, priority = NULL,
                     lease_token = NULL, lease_until = NULL, request = NULL, last_error = NULL,
                     attempts = 0, after_failure = false, version = nextval('{ids}'),
                     c_status = i.status, c_headers = i.headers, c_body = i.body,
                     c_generated_at = i.generated_at, c_fresh_until = i.fresh_until,
                     c_stale_until = i.stale_until, c_sie_until = i.sie_until,
                     c_job_millis = i.job_millis,
                     tags = CASE WHEN i.tags = '' THEN '{{}}'::text[]
                                 ELSE string_to_array(i.tags, E'\\x1f') END,
                     v_kind = 0, v_until = NULL, v_status = NULL, v_headers = NULL, v_body = NULL,
                     v_text = NULL, v_attempts = NULL, v_at = NULL,
                     expires_at = GREATEST(i.fresh_until, i.stale_until, i.sie_until)
                   FROM target i
                   WHERE e.ctid = i.row_id
                 RETURNING e.key, e.uri, e.version"
            ),
            complete_retry: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL, run_at = $4,
                   last_error = $5, version = nextval('{ids}')
                 WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                 RETURNING key"
            ),
            take_once: format!(
                "WITH old AS (
                   SELECT key, v_status, v_headers, v_body FROM {t}
                   WHERE key = $1 AND NOT pending AND v_kind = 2 AND v_status IS NOT NULL
                     AND v_until > $2
                   FOR UPDATE)
                 UPDATE {t} e SET v_status = NULL, v_headers = NULL, v_body = NULL,
                                  version = nextval('{ids}')
                 FROM old WHERE e.key = old.key
                 RETURNING old.v_status, old.v_headers, old.v_body"
            ),
            // `$1` the cap: counting further would not change the answer. Each half is
            // served by its own partial index.
            count_pending: format!(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM {t}
                           WHERE pending AND lease_token IS NULL LIMIT $1) queued)
                      + (SELECT count(*) FROM (SELECT 1 FROM {t}
                           WHERE pending AND lease_token IS NOT NULL LIMIT $1) leased)"
            ),
            stats: format!(
                "SELECT
                   count(*) FILTER (WHERE NOT pending AND v_kind = 2 AND v_until > $1) AS pass,
                   count(*) FILTER (WHERE NOT pending AND v_kind = 1 AND v_until > $1) AS failed,
                   count(*) FILTER (WHERE NOT pending AND NOT (v_kind IN (1, 2) AND v_until > $1)
                                    AND c_fresh_until > $1) AS fresh,
                   count(*) FILTER (WHERE NOT pending AND NOT (v_kind IN (1, 2) AND v_until > $1)
                                    AND NOT COALESCE(c_fresh_until > $1, false)) AS stale,
                   count(*) FILTER (WHERE pending) AS pending,
                   count(*) FILTER (WHERE pending AND ((lease_token IS NULL AND run_at <= $1)
                                    OR lease_until <= $1)) AS ready,
                   count(*) FILTER (WHERE pending AND lease_token IS NULL AND run_at > $1)
                     AS scheduled,
                   count(*) FILTER (WHERE pending AND lease_until > $1) AS running,
                   COALESCE(sum(COALESCE(octet_length(c_body), 0) + COALESCE(octet_length(c_headers), 0)
                                + COALESCE(octet_length(v_body), 0) + length(uri) + 160)
                            FILTER (WHERE NOT pending), 0)::bigint AS bytes,
                   COALESCE(max($1 - run_at) FILTER (WHERE pending AND lease_token IS NULL
                                                     AND run_at <= $1), 0)::bigint AS oldest
                 FROM {t} WHERE pending OR expires_at > $1"
            ),
            channels: (done, jobs),
            schema: schema.to_owned(),
        }
    }

    pub(super) fn channels(&self) -> (String, String) {
        self.channels.clone()
    }

    pub(super) fn migration(&self) -> String {
        let s = &self.schema;
        format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY);
             CREATE SEQUENCE IF NOT EXISTS {s}.ids;
             CREATE TABLE IF NOT EXISTS {s}.entries (
               key            bytea PRIMARY KEY,
               uri            text NOT NULL,
               version        bigint NOT NULL,
               pending        boolean NOT NULL,
               job_id         bigint,
               priority       smallint,
               created_at     bigint,
               run_at         bigint,
               attempts       integer NOT NULL DEFAULT 0,
               lease_token    bigint,
               lease_until    bigint,
               last_error     text,
               after_failure  boolean NOT NULL DEFAULT false,
               request        text,
               c_status       smallint,
               c_headers      bytea,
               c_body         bytea,
               c_generated_at bigint,
               c_fresh_until  bigint,
               c_stale_until  bigint,
               c_sie_until    bigint,
               c_job_millis   bigint,
               tags           text[] NOT NULL DEFAULT '{{}}',
               v_kind         smallint NOT NULL DEFAULT 0,
               v_until        bigint,
               v_status       smallint,
               v_headers      bytea,
               v_body         bytea,
               v_text         text,
               v_attempts     integer,
               v_at           bigint,
               expires_at     bigint
             );
             CREATE INDEX IF NOT EXISTS entries_ready ON {s}.entries (priority, run_at)
               WHERE pending AND lease_token IS NULL;
             CREATE INDEX IF NOT EXISTS entries_leased ON {s}.entries (lease_until)
               WHERE pending AND lease_token IS NOT NULL;
             CREATE INDEX IF NOT EXISTS entries_expiry ON {s}.entries (expires_at)
               WHERE NOT pending;
             INSERT INTO {s}.migrations (version) VALUES (1) ON CONFLICT DO NOTHING;
             -- 2: purges by URI look only at rows with something to purge (settled, or
             -- pending with a stale copy), so a new job's claim and take skip this index.
             DROP INDEX IF EXISTS {s}.entries_uri;
             CREATE INDEX IF NOT EXISTS entries_uri_kept ON {s}.entries (uri text_pattern_ops)
               WHERE NOT pending OR c_status IS NOT NULL;
             INSERT INTO {s}.migrations (version) VALUES (2) ON CONFLICT DO NOTHING;"
        )
    }
}
