//! Reading replies: script and `HGETALL` replies into entries, jobs and figures.

use super::*;

pub(super) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(super) fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    }
}

pub(super) fn signed(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    }
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::VerbatimString { text, .. } => text.clone(),
        other => bytes(other)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    }
}

pub(super) fn array(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(corrupt("expected an array reply")),
    }
}

/// An entry hash as field/value pairs (`HGETALL`).
pub(super) struct Fields<'a>(Vec<(&'a [u8], &'a [u8])>);

impl<'a> Fields<'a> {
    pub(super) fn of(v: &'a Value) -> Result<Self, StoreError> {
        let mut pairs = Vec::with_capacity(32);
        match v {
            Value::Array(items) => {
                for pair in items.chunks(2) {
                    if let [k, v] = pair {
                        pairs.push((
                            bytes(k).ok_or_else(|| corrupt("field name"))?,
                            bytes(v).ok_or_else(|| corrupt("field value"))?,
                        ));
                    }
                }
            }
            Value::Map(items) => {
                for (k, v) in items {
                    pairs.push((
                        bytes(k).ok_or_else(|| corrupt("field name"))?,
                        bytes(v).ok_or_else(|| corrupt("field value"))?,
                    ));
                }
            }
            _ => return Err(corrupt("entry reply")),
        }
        Ok(Self(pairs))
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.0
            .iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| *v)
    }

    pub(super) fn str(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|b| std::str::from_utf8(b).ok())
    }

    pub(super) fn num(&self, name: &str) -> Option<u64> {
        self.str(name).and_then(parse_number)
    }

    pub(super) fn ts(&self, name: &str) -> Timestamp {
        Timestamp(self.num(name).unwrap_or(0))
    }

    pub(super) fn response(
        &self,
        status: &str,
        headers: &str,
        body: &str,
    ) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        let Some(status) = self.num(status) else {
            return Ok(None);
        };
        response(
            status,
            self.get(headers).unwrap_or_default(),
            self.get(body).unwrap_or_default(),
        )
        .map(Some)
    }

    pub(super) fn entry(&self) -> Result<Entry, StoreError> {
        let key = self.key()?;
        let content = self.response("cs", "ch", "cb")?.map(|response| Content {
            response,
            generated_at: self.ts("cg"),
            fresh_until: self.ts("cf"),
            stale_until: self.ts("cst"),
            stale_if_error_until: self.ts("csi"),
            tags: self
                .str("tg")
                .filter(|t| !t.is_empty())
                .map(|t| t.split('\u{1f}').map(str::to_owned).collect())
                .unwrap_or_default(),
            job_millis: self.num("cj").unwrap_or(0),
        });
        let status = if self.get("p") == Some(b"1") {
            Status::Pending(JobInfo {
                id: JobId(self.num("j").unwrap_or(0)),
                priority: priority(self.num("pr").unwrap_or(0)),
                created_at: self.ts("ca"),
                run_at: self.ts("ra"),
                attempts: u32::try_from(self.num("at").unwrap_or(0)).unwrap_or(u32::MAX),
                lease_until: self.num("lu").map(Timestamp),
                last_error: self.str("le").map(str::to_owned),
                after_failure: self.get("af") == Some(b"1"),
            })
        } else {
            let until = self.ts("vu");
            let verdict = self.response("vs", "vh", "vb")?;
            let reason = self.str("vt").unwrap_or_default().to_owned();
            match self.get("vk") {
                Some(b"1") => Status::Failed(Failure {
                    until,
                    response: verdict.ok_or_else(|| corrupt("failure without a response"))?,
                    error: reason,
                    attempts: u32::try_from(self.num("va").unwrap_or(0)).unwrap_or(u32::MAX),
                    at: self.ts("vat"),
                    request: self
                        .get("rq")
                        .filter(|r| !r.is_empty())
                        .map(serde_json::from_slice)
                        .transpose()
                        .map_err(|e| corrupt(&format!("failed request: {e}")))?,
                }),
                Some(b"2") => Status::Pass(PassInfo {
                    until,
                    once: verdict,
                    reason,
                }),
                _ => Status::Idle,
            }
        };
        Ok(Entry {
            key,
            uri: self.str("u").unwrap_or_default().into(),
            version: self.num("v").unwrap_or(0),
            content,
            status,
        })
    }

    /// The key is not a field; it is put in by [`RedisStore::read_entry`].
    pub(super) fn key(&self) -> Result<Key, StoreError> {
        self.str("key")
            .and_then(Key::parse)
            .ok_or_else(|| corrupt("key"))
    }
}

/// Numbers written by Lua come back as integers, or (for large ones) in `%.17g` form.
pub(super) fn parse_number(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

pub(super) fn response(
    status: u64,
    headers: &[u8],
    body: &[u8],
) -> Result<Arc<StoredResponse>, StoreError> {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| corrupt("status"))?;
    let (headers, selecting) = decode_headers(headers).ok_or_else(|| corrupt("headers"))?;
    Ok(Arc::new(StoredResponse {
        status,
        headers,
        body: Bytes::copy_from_slice(body),
        selecting,
    }))
}

pub(super) fn priority(v: u64) -> Priority {
    if v == Priority::Refresh as u64 {
        Priority::Refresh
    } else {
        Priority::Miss
    }
}

impl RedisStore {
    /// Reads an entry from an `HGETALL` reply.
    pub(super) fn read_entry(key: &Key, reply: &Value) -> Result<Option<Entry>, StoreError> {
        let hex = key.to_hex();
        let mut fields = Fields::of(reply)?;
        if fields.0.is_empty() {
            return Ok(None);
        }
        fields.0.push((b"key", hex.as_bytes()));
        fields.entry().map(Some)
    }
}
