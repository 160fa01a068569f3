//! Discord's rate limits over the fake's REST API, once a test turns them on: a global bucket
//! per bot, a bucket per route and top-level resource, the `X-RateLimit-*` headers of every
//! answer and the 429 of an empty bucket.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::rest::{Req, Resp};
use super::RateLimits;

/// Extra response headers, name and value.
pub(super) type Headers = Vec<(String, String)>;

/// Discord's rate limits over the fake's REST API: one global bucket, and one bucket per route
/// and top-level resource (see [`RateLimits`]).
pub(super) struct Limiter {
    limits: RateLimits,
    global: Bucket,
    /// By route and top-level resource, e.g. `PATCH /channels/{}/messages/:id` and the channel.
    routes: HashMap<(String, String), Bucket>,
}

/// A window of `limit` requests that opens with its first request and lasts `window`.
struct Bucket {
    limit: u32,
    window: Duration,
    remaining: u32,
    /// When the current window ends (a fresh bucket's has ended already).
    reset_at: Instant,
}

impl Bucket {
    pub(super) fn new(limit: u32, window: Duration, at: Instant) -> Bucket {
        Bucket {
            limit,
            window,
            remaining: limit,
            reset_at: at,
        }
    }

    /// Opens a new window when the last one has ended.
    fn refresh(&mut self, at: Instant) {
        if at >= self.reset_at {
            self.remaining = self.limit;
            self.reset_at = at + self.window;
        }
    }
}

impl Limiter {
    pub(super) fn new(limits: RateLimits) -> Limiter {
        let now = Instant::now();
        Limiter {
            limits,
            global: Bucket::new(limits.global_per_second, Duration::from_secs(1), now),
            routes: HashMap::new(),
        }
    }

    /// Takes one request from the request's buckets: the `X-RateLimit-*` headers of its route,
    /// or the 429 that Discord answers when a bucket is empty (which takes nothing).
    pub(super) fn check(&mut self, req: &Req, at: Instant) -> Result<Headers, (Resp, Headers)> {
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        // The top-level resource: a channel or guild id, or a webhook's or interaction's id
        // and token. Other ids in the path share the route's bucket.
        let major = match segments.first() {
            Some(&"channels" | &"guilds") => 2,
            Some(&"webhooks" | &"interactions") => 3,
            _ => 1,
        }
        .min(segments.len());
        let template: Vec<&str> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| match i {
                0 => s,
                _ if i < major => "{}",
                _ if s.bytes().all(|b| b.is_ascii_digit()) => ":id",
                _ => s,
            })
            .collect();
        let route = format!("{} /{}", req.method, template.join("/"));
        let resource = segments[..major].join("/");
        // Interaction endpoints are exempt from the global limit, as on Discord.
        let exempt = major == 3;
        let messages = matches!(
            (req.method.as_str(), segments.as_slice()),
            ("POST", ["channels", _, "messages"]) | ("PATCH", ["channels", _, "messages", _])
        );
        let (limit, window) = if messages {
            (self.limits.messages, self.limits.message_window)
        } else {
            (self.limits.global_per_second, Duration::from_secs(1))
        };
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            route.hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        };
        let bucket = self
            .routes
            .entry((route, resource))
            .or_insert_with(|| Bucket::new(limit, window, at));
        bucket.refresh(at);
        self.global.refresh(at);
        let global_empty = !exempt && self.global.remaining == 0;
        let (empty, global) = if global_empty {
            (&self.global, true)
        } else if bucket.remaining == 0 {
            (&*bucket, false)
        } else {
            bucket.remaining -= 1;
            if !exempt {
                self.global.remaining -= 1;
            }
            return Ok(rate_headers(bucket, &hash, at));
        };
        let retry_after = (empty.reset_at - at).as_secs_f64();
        let retry_after = (retry_after * 1000.0).ceil() / 1000.0;
        let mut headers = rate_headers(bucket, &hash, at);
        headers.push(("Retry-After".into(), retry_after.ceil().to_string()));
        headers.push((
            "X-RateLimit-Scope".into(),
            if global { "global" } else { "user" }.into(),
        ));
        if global {
            headers.push(("X-RateLimit-Global".into(), "true".into()));
        }
        let body = json!({
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": global,
        });
        Err((
            Resp {
                status: 429,
                body: Some(body),
            },
            headers,
        ))
    }
}

/// The `X-RateLimit-*` headers that describe `bucket` at `at`.
fn rate_headers(bucket: &Bucket, hash: &str, at: Instant) -> Headers {
    let after = bucket.reset_at.saturating_duration_since(at).as_secs_f64();
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        + after;
    vec![
        ("X-RateLimit-Limit".into(), bucket.limit.to_string()),
        ("X-RateLimit-Remaining".into(), bucket.remaining.to_string()),
        ("X-RateLimit-Reset".into(), format!("{reset:.3}")),
        ("X-RateLimit-Reset-After".into(), format!("{after:.3}")),
        ("X-RateLimit-Bucket".into(), hash.to_string()),
    ]
}
