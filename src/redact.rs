//! Masks secrets in text that leaves the bot's control: the output of the commands the coding
//! agent runs, which ends up in a Discord thread, in a log file and in the LLM's context.
//!
//! Two layers. The values the bot itself holds (the LLM key, the Discord token, the GitHub token)
//! are masked wherever they appear. And the shapes of common credentials are masked even when
//! nobody configured them, because a command in a work tree can print tokens of its own (a `.env`
//! file, `git remote -v`, a verbose `curl`). Shapes are matched by hand in one pass over the text,
//! at the start of words, so ordinary output (commit hashes, UUIDs, base64 blobs) stays readable.
//!
//! Text that arrives in pieces (a pipe) goes through [`StreamRedactor`], which releases it a line
//! at a time so a token split between two reads is still seen whole. A reply streamed to people
//! goes through [`Redactor::words`], which releases it a word at a time instead, and a line at a
//! time only around the shapes that span words (`Bearer <token>`, an `Authorization:` header, a
//! private key's BEGIN line).

use std::borrow::Cow;
use std::fmt;

use crate::config::Config;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Configured values shorter than this are ignored: masking them would mangle ordinary words.
const MIN_SECRET_CHARS: usize = 6;

/// A [`StreamRedactor`] holds at most this much of an unfinished line before releasing it.
const MAX_PENDING: usize = 16 * 1024;

/// Masks configured secret values and common token shapes. `Debug` prints only how many values it
/// holds.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another one is masked whole.
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for these values; empty and very short ones (under six characters) are ignored.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| s.chars().count() >= MIN_SECRET_CHARS)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// A redactor for every secret in the configuration: the LLM key, `DISCORD_TOKEN` and
    /// `GITHUB_TOKEN`.
    pub fn from_config(config: &Config) -> Redactor {
        let secrets = [
            config.llm.api_key.as_ref(),
            config.discord.as_ref().and_then(|d| d.token.as_ref()),
            config.github.as_ref().and_then(|g| g.token.as_ref()),
            config.repo.github_token.as_ref(),
        ];
        Redactor::new(
            secrets
                .into_iter()
                .flatten()
                .map(|secret| secret.expose().to_string()),
        )
    }

    /// `text` with every configured value and every recognised credential replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        self.redact_open(text).0
    }

    /// `text` with only the configured values replaced by [`MASK`]; token shapes stay as they
    /// are. For what the coding agent reads and writes in a work tree, where a shape is often
    /// code (`"Bearer " + token`, a test's `ghp_...` fixture) and must stay as written, while a
    /// real token of ours must never be read or committed.
    pub fn mask_values(&self, text: &str) -> String {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), MASK));
            }
        }
        text.into_owned()
    }

    /// Whether `bytes` (a file's, not necessarily UTF-8) hold one of the configured values.
    pub fn holds_value(&self, bytes: &[u8]) -> bool {
        self.secrets.iter().any(|secret| {
            let secret = secret.as_bytes();
            bytes.windows(secret.len()).any(|window| window == secret)
        })
    }

    /// A redactor for text that arrives in pieces, released a line at a time.
    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor {
            redactor: self,
            pending: String::new(),
            in_private_key: false,
            words: false,
        }
    }

    /// A redactor for text that people watch arrive (a streamed reply), released a word at a
    /// time. What it releases, put together, is what [`Redactor::redact`] makes of the whole
    /// (configured values never contain whitespace that matters: they are tokens).
    pub fn words(&self) -> StreamRedactor<'_> {
        StreamRedactor {
            words: true,
            ..self.stream()
        }
    }

    /// Like [`Redactor::redact`], and whether the text ends inside a private key block (its
    /// `-----END` line is yet to come).
    fn redact_open(&self, text: &str) -> (String, bool) {
        mask_shapes(&self.mask_values(text))
    }
}

/// Masks text that arrives in pieces, such as a child's output read from a pipe.
///
/// Text is released up to the last line break (a line longer than 16 KiB is released at a space,
/// or whole), so a token is never split between two calls to [`Redactor::redact`]. Inside a
/// private key block everything is dropped until its `-----END` line.
pub struct StreamRedactor<'a> {
    redactor: &'a Redactor,
    pending: String,
    in_private_key: bool,
    /// Release at the last whitespace rather than the last line break, where that is safe.
    words: bool,
}

impl StreamRedactor<'_> {
    /// Takes the next piece and returns the redacted text that is ready, possibly none.
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let ready = match self
            .word_boundary()
            .or(self.pending.rfind('\n').map(|n| n + 1))
        {
            Some(ready) => ready,
            None if self.pending.len() >= MAX_PENDING => self
                .pending
                .rfind([' ', '\t'])
                .map_or(self.pending.len(), |space| space + 1),
            None => return String::new(),
        };
        let rest = self.pending.split_off(ready);
        let ready = std::mem::replace(&mut self.pending, rest);
        self.release(&ready)
    }

    /// In word mode, just past the last whitespace, unless the unfinished line holds the start
    /// of a shape that spans words; then the line is released whole.
    fn word_boundary(&self) -> Option<usize> {
        if !self.words || self.in_private_key {
            return None;
        }
        let line_start = self.pending.rfind('\n').map_or(0, |n| n + 1);
        let line = self.pending[line_start..].to_ascii_lowercase();
        let spans_words = ["bearer", "authorization", "api-key", "-----"]
            .iter()
            .any(|start| line.contains(start));
        if spans_words {
            return None;
        }
        self.pending
            .rfind(|c: char| c.is_ascii_whitespace())
            .map(|space| space + 1)
    }

    /// The redacted rest, at the end of the stream.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.release(&rest)
    }

    fn release(&mut self, text: &str) -> String {
        let text = if self.in_private_key {
            match text.find("-----END ") {
                Some(end) => &text[end..],
                None => return String::new(),
            }
        } else {
            text
        };
        let (masked, open) = self.redactor.redact_open(text);
        self.in_private_key = open;
        masked
    }
}

/// A credential found in the text: `text[keep..end]` is masked, and the match began at a word
/// start before `keep` (a header name, `Bearer `, a key's BEGIN line stay visible).
struct Found {
    keep: usize,
    end: usize,
    /// A private key block whose END line is missing: it runs to the end of the text.
    open: bool,
}

impl Found {
    fn new(keep: usize, end: usize) -> Found {
        Found {
            keep,
            end,
            open: false,
        }
    }
}

/// Masks the token shapes in one pass; true when the text ends inside a private key block.
fn mask_shapes(text: &str) -> (String, bool) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // `text[..copied]` is in `out`, masked.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let found = if is_word(bytes[i]) {
            if i > 0 && is_word(bytes[i - 1]) {
                i += 1;
                continue;
            }
            let word_end = run_end(bytes, i, is_word);
            match find_at_word(bytes, i, word_end) {
                Some(found) => found,
                None => {
                    i = word_end;
                    continue;
                }
            }
        } else {
            match url_password(bytes, i) {
                Some(found) => found,
                None => {
                    i += 1;
                    continue;
                }
            }
        };
        // Every match starts and ends next to an ASCII byte, so these are char boundaries.
        out.push_str(&text[copied..found.keep]);
        out.push_str(MASK);
        copied = found.end;
        i = found.end.max(i + 1);
        if found.open {
            return (out, true);
        }
    }
    out.push_str(&text[copied..]);
    (out, false)
}

/// Letters, digits, `_` and `-`: the characters of tokens and of base64url.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_alnum_or_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of the run of bytes matching `class` that starts at `from`.
fn run_end(bytes: &[u8], from: usize, class: impl Fn(u8) -> bool) -> usize {
    bytes[from.min(bytes.len())..]
        .iter()
        .position(|&b| !class(b))
        .map_or(bytes.len(), |n| from + n)
}

fn starts_with_at(bytes: &[u8], at: usize, prefix: &[u8]) -> bool {
    bytes.get(at..).is_some_and(|rest| rest.starts_with(prefix))
}

fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| from + n)
}

/// The credential that starts at the word `bytes[start..word_end]`, if any.
fn find_at_word(bytes: &[u8], start: usize, word_end: usize) -> Option<Found> {
    let whole = |end: usize| Found::new(start, end);
    // A token of at least `min` bytes of `class` after a fixed prefix.
    let token = |prefix: usize, min: usize, class: fn(u8) -> bool| {
        let end = run_end(bytes, start + prefix, class);
        (end - (start + prefix) >= min).then(|| whole(end))
    };
    let at = |prefix: &[u8]| starts_with_at(bytes, start, prefix);

    // GitHub: ghp_, gho_, ghu_, ghs_, ghr_ and fine-grained github_pat_.
    if at(b"github_pat_") {
        return token(11, 20, is_alnum_or_underscore);
    }
    if at(b"gh")
        && matches!(bytes.get(start + 2), Some(b'p' | b'o' | b'u' | b's' | b'r'))
        && bytes.get(start + 3) == Some(&b'_')
    {
        return token(4, 20, is_alnum_or_underscore);
    }
    // OpenAI and Anthropic: sk-..., sk-proj-..., sk-ant-...
    if at(b"sk-") {
        let body = &bytes[start + 3..word_end];
        let plausible = body.len() >= 20
            && body.iter().any(u8::is_ascii_digit)
            && body.iter().any(u8::is_ascii_alphabetic);
        return plausible.then(|| whole(word_end));
    }
    // Slack: xoxa-, xoxb-, xoxp-, xoxr-, xoxs-, xoxe- (a refresh token) and app-level xapp-;
    // all hold digits, unlike a word such as `xoxb-placeholder`.
    let slack = |prefix: usize| {
        let found = token(prefix, 10, |b| b.is_ascii_alphanumeric() || b == b'-')?;
        bytes[start + prefix..found.end]
            .iter()
            .any(u8::is_ascii_digit)
            .then_some(found)
    };
    if at(b"xox")
        && matches!(
            bytes.get(start + 3),
            Some(b'a' | b'b' | b'p' | b'r' | b's' | b'e')
        )
        && bytes.get(start + 4) == Some(&b'-')
    {
        return slack(5);
    }
    if at(b"xapp-") {
        return slack(5);
    }
    // Google API keys: AIza and 35 more characters.
    if at(b"AIza") {
        return token(4, 35, |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        });
    }
    // GitLab personal access tokens.
    if at(b"glpat-") {
        return token(6, 20, |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        });
    }
    // Stripe secret and restricted keys, live and test.
    for prefix in [b"sk_live_", b"rk_live_", b"sk_test_", b"rk_test_"] {
        if at(prefix) {
            return token(prefix.len(), 24, |b| b.is_ascii_alphanumeric());
        }
    }
    // npm access tokens.
    if at(b"npm_") {
        return token(4, 36, |b| b.is_ascii_alphanumeric());
    }
    // Hugging Face access tokens: letters of both cases, where an identifier such as
    // `hf_hub_download` has an underscore after a few.
    if at(b"hf_") {
        let end = run_end(bytes, start + 3, |b| b.is_ascii_alphanumeric());
        let body = &bytes[start + 3..end];
        let plausible = body.len() >= 30
            && body.iter().any(u8::is_ascii_uppercase)
            && body.iter().any(u8::is_ascii_lowercase);
        return plausible.then(|| whole(end));
    }
    // PyPI upload tokens: a macaroon, base64 of a header naming pypi.org.
    if at(b"pypi-AgEIcHlwaS5vcmc") {
        return token(20, 50, |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        });
    }
    // AWS access key ids, long-lived (AKIA) and temporary (ASIA).
    if (at(b"AKIA") || at(b"ASIA")) && word_end - start == 20 {
        let id = &bytes[start + 4..word_end];
        if id
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Some(whole(word_end));
        }
    }
    if at(b"-----BEGIN ") {
        return private_key(bytes, start);
    }
    if let Some(found) = dotted_token(bytes, start, word_end) {
        return Some(found);
    }
    let word = &bytes[start..word_end];
    if word.eq_ignore_ascii_case(b"bearer") {
        return bearer(bytes, word_end);
    }
    if ends_with_ignore_case(word, b"authorization") || word.eq_ignore_ascii_case(b"x-api-key") {
        return header_value(bytes, word_end);
    }
    None
}

fn ends_with_ignore_case(word: &[u8], suffix: &[u8]) -> bool {
    word.len() >= suffix.len() && word[word.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// A Discord bot token or a JWT: three base64url parts joined by dots, the first one long and of
/// mixed case (a Discord token's first part is the bot's id in base64, a JWT's is `eyJ...`).
fn dotted_token(bytes: &[u8], start: usize, first_end: usize) -> Option<Found> {
    let first = &bytes[start..first_end];
    if first.len() < 23
        || !first.iter().any(u8::is_ascii_uppercase)
        || !first.iter().any(u8::is_ascii_lowercase)
        || bytes.get(first_end) != Some(&b'.')
    {
        return None;
    }
    let second_end = run_end(bytes, first_end + 1, is_word);
    if second_end - (first_end + 1) < 6 || bytes.get(second_end) != Some(&b'.') {
        return None;
    }
    let third_end = run_end(bytes, second_end + 1, is_word);
    (third_end - (second_end + 1) >= 27).then(|| Found::new(start, third_end))
}

/// `Bearer <token>`: the token is masked when it looks like one (a digit in it, or long).
fn bearer(bytes: &[u8], word_end: usize) -> Option<Found> {
    let token_start = run_end(bytes, word_end, |b| b == b' ' || b == b'\t');
    if token_start == word_end {
        return None;
    }
    let end = run_end(bytes, token_start, |b| {
        is_word(b) || matches!(b, b'.' | b'~' | b'+' | b'/' | b'=')
    });
    let token = &bytes[token_start..end];
    let plausible = token.len() >= 8 && (token.iter().any(u8::is_ascii_digit) || token.len() >= 24);
    plausible.then(|| Found::new(token_start, end))
}

/// The value of an `Authorization` (or `Proxy-Authorization`, `x-api-key`) header, in HTTP
/// (`Authorization: Basic ...`), JSON (`"Authorization": "..."`, escaped or not) or `name=value`
/// form. The value runs to the end of the line or to a quote.
fn header_value(bytes: &[u8], name_end: usize) -> Option<Found> {
    let is_quote = |b: u8| matches!(b, b'"' | b'\'' | b'\\');
    let is_blank = |b: u8| b == b' ' || b == b'\t';
    let after_name = run_end(bytes, name_end, is_quote);
    let separator = run_end(bytes, after_name, is_blank);
    if !matches!(bytes.get(separator), Some(b':' | b'=')) {
        return None;
    }
    let after_blank = run_end(bytes, separator + 1, is_blank);
    let value_start = run_end(bytes, after_blank, is_quote);
    let end = run_end(bytes, value_start, |b| {
        !is_quote(b) && b != b'\n' && b != b'\r'
    });
    let value = &bytes[value_start..end];
    (!value.iter().all(|&b| is_blank(b))).then(|| Found::new(value_start, end))
}

/// A PEM private key: the BEGIN line stays, the body up to `-----END` is masked (to the end of
/// the text when the END line is missing, as in truncated output).
fn private_key(bytes: &[u8], start: usize) -> Option<Found> {
    let label_start = start + "-----BEGIN ".len();
    let label_end = find_from(bytes, label_start, b"-----")?;
    let label = &bytes[label_start..label_end];
    if label.len() > 64 || label.contains(&b'\n') || find_from(label, 0, b"PRIVATE KEY").is_none() {
        return None;
    }
    let keep = label_end + "-----".len();
    Some(match find_from(bytes, keep, b"-----END ") {
        Some(end) => Found::new(keep, end),
        None => Found {
            keep,
            end: bytes.len(),
            open: true,
        },
    })
}

/// The password of a URL with credentials, `scheme://user:password@host`, found at the `:` of
/// `://`.
fn url_password(bytes: &[u8], colon: usize) -> Option<Found> {
    if !starts_with_at(bytes, colon, b"://") {
        return None;
    }
    let in_userinfo = |b: u8| {
        !b.is_ascii_whitespace() && !matches!(b, b'/' | b'@' | b':' | b'?' | b'#' | b'"' | b'\'')
    };
    let user_end = run_end(bytes, colon + 3, in_userinfo);
    if bytes.get(user_end) != Some(&b':') {
        return None;
    }
    let password_end = run_end(bytes, user_end + 1, in_userinfo);
    (password_end > user_end + 1 && bytes.get(password_end) == Some(&b'@'))
        .then(|| Found::new(user_end + 1, password_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GHP: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";
    const PAT: &str =
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX";
    const DISCORD: &str = "MTEyMzQ1Njc4OTAxMjM0NTY3OA.GaBcDe.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456";
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    fn check(redactor: &Redactor, input: &str, expected: &str) {
        assert_eq!(redactor.redact(input), expected, "redacting {input:?}");
    }

    #[test]
    fn configured_values_are_masked_everywhere() {
        let r = Redactor::new([
            "hunter2-but-longer".to_string(),
            "tiny".to_string(),
            String::new(),
        ]);
        for (input, expected) in [
            ("key=hunter2-but-longer", "key=***"),
            ("hunter2-but-longerhunter2-but-longer", "******"),
            ("a hunter2-but-longer b hunter2-but-longer", "a *** b ***"),
            ("«hunter2-but-longer»ü", "«***»ü"),
            ("{\"k\":\"hunter2-but-longer\"}", "{\"k\":\"***\"}"),
            (
                "https://u:hunter2-but-longer@host/x",
                "https://u:***@host/x",
            ),
            // Short values are not secrets worth mangling text for.
            ("tiny tim", "tiny tim"),
            ("", ""),
        ] {
            check(&r, input, expected);
        }
    }

    /// What the agent reads and writes keeps its token shapes; only our own values go.
    #[test]
    fn mask_values_leaves_shapes_and_finds_values_in_bytes() {
        let r = Redactor::new(["configured-secret".to_string()]);
        let code = format!(
            "const auth = \"Bearer \" + token; // {GHP}\nheaders = {{\"Authorization\": \"Basic x\"}}\n"
        );
        assert_eq!(r.mask_values(&code), code);
        assert_ne!(r.redact(&code), code, "shown, the shapes are masked");
        assert_eq!(
            r.mask_values("key = configured-secret; ghp_x"),
            "key = ***; ghp_x"
        );
        assert!(r.holds_value(b"\xff\x00key=configured-secret\n"));
        assert!(!r.holds_value(b"configured-secre"));
        assert!(!r.holds_value(code.as_bytes()));
        assert!(!Redactor::default().holds_value(b"anything"));
    }

    #[test]
    fn a_secret_containing_another_is_masked_whole() {
        let r = Redactor::new(["abcdef".to_string(), "abcdefghijkl".to_string()]);
        check(&r, "x abcdefghijkl y abcdef", "x *** y ***");
    }

    #[test]
    fn token_shapes_are_masked_without_configuration() {
        let r = Redactor::default();
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1\nabc+/=\n-----END RSA PRIVATE KEY-----\n";
        for (input, expected) in [
            (format!("token {GHP} end"), "token *** end".to_string()),
            (format!("{GHP}\n{GHP}"), "***\n***".to_string()),
            (
                format!("https://x-access-token:{GHP}@github.com/o/r.git"),
                "https://x-access-token:***@github.com/o/r.git".to_string(),
            ),
            (
                format!("https://{GHP}@github.com/o/r"),
                "https://***@github.com/o/r".to_string(),
            ),
            (
                format!("{{\"token\":\"{GHP}\"}}"),
                "{\"token\":\"***\"}".to_string(),
            ),
            (format!("→{GHP}←"), "→***←".to_string()),
            (
                format!("GITHUB_TOKEN={PAT}"),
                "GITHUB_TOKEN=***".to_string(),
            ),
            ("gho_0123456789abcdefghijKLMN".into(), "***".into()),
            ("ghs_0123456789abcdefghijKLMN,".into(), "***,".into()),
            (
                "OPENAI_API_KEY=sk-proj-Ab3dEfGh1jKlMnOpQrStUvWx_yz-0123".into(),
                "OPENAI_API_KEY=***".into(),
            ),
            (
                "sk-ant-api03-AbCdEf0123456789_xyz-AA ok".into(),
                "*** ok".into(),
            ),
            ("sk-0123456789abcdefghijABCDEFGHIJ".into(), "***".into()),
            ("xoxb-123456789012-abcdefABCDEF".into(), "***".into()),
            ("id AKIAIOSFODNN7EXAMPLE.".into(), "id ***.".into()),
            (
                format!("DISCORD_TOKEN={DISCORD}"),
                "DISCORD_TOKEN=***".to_string(),
            ),
            (format!("jwt {JWT} ok"), "jwt *** ok".to_string()),
            (
                "Authorization: Bearer abc.def.ghi123\r\n".into(),
                "Authorization: ***\r\n".into(),
            ),
            (
                "curl -H 'authorization: token 0123abc' x".into(),
                "curl -H 'authorization: ***' x".into(),
            ),
            (
                "{\"Authorization\": \"Basic dXNlcjpwYXNz\"}".into(),
                "{\"Authorization\": \"***\"}".into(),
            ),
            (
                "{\\\"Authorization\\\":\\\"Basic dXNlcjpwYXNz\\\"}".into(),
                "{\\\"Authorization\\\":\\\"***\\\"}".into(),
            ),
            (
                "Proxy-Authorization: Basic Zm9vOmJhcg==\n".into(),
                "Proxy-Authorization: ***\n".into(),
            ),
            (
                "x-api-key: some-long-key\n".into(),
                "x-api-key: ***\n".into(),
            ),
            (
                "using Bearer eyJ0eXAiOiJKV1Q1 now".into(),
                "using Bearer *** now".into(),
            ),
            (
                format!("key:\n{pem}after"),
                "key:\n-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----\nafter"
                    .to_string(),
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n(cut)".into(),
                "-----BEGIN OPENSSH PRIVATE KEY-----***".into(),
            ),
            (
                "\"-----BEGIN PRIVATE KEY-----\\nMIIEvg\\n-----END PRIVATE KEY-----\\n\"".into(),
                "\"-----BEGIN PRIVATE KEY-----***-----END PRIVATE KEY-----\\n\"".into(),
            ),
        ] {
            check(&r, &input, &expected);
        }
    }

    /// Each token shape, masked, beside a near miss that is left alone (too short, a word, an
    /// identifier of code).
    #[test]
    fn each_shape_is_masked_and_its_near_miss_left_alone() {
        let r = Redactor::default();
        for (shape, token, near_miss) in [
            ("GitHub classic", GHP, "ghp_short"),
            ("GitHub fine-grained", PAT, "github_pat_short"),
            ("GitHub OAuth", "gho_0123456789abcdefghijKLMN", "gho_abc"),
            (
                "GitHub user-to-server",
                "ghu_0123456789abcdefghijKLMN",
                "ghu_token",
            ),
            (
                "GitHub server-to-server",
                "ghs_0123456789abcdefghijKLMN",
                "ghs_x1",
            ),
            ("GitHub refresh", "ghr_0123456789abcdefghijKLMN", "ghr_"),
            ("OpenAI", "sk-0123456789abcdefghijABCDEFGHIJ", "sk-learn"),
            (
                "OpenAI project",
                "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWx_yz-0123",
                "sk-proj-setup",
            ),
            (
                "OpenAI service account",
                "sk-svcacct-Ab3dEfGh1jKlMnOpQrStUvWx0123",
                "sk-svcacct-notes",
            ),
            (
                "Anthropic",
                "sk-ant-api03-AbCdEf0123456789_xyz-AAbbCCdd",
                "sk-antipattern-in-the-docs-here",
            ),
            (
                "Slack bot",
                "xoxb-123456789012-abcdefABCDEF",
                "xoxb-placeholder-token",
            ),
            (
                "Slack refresh",
                "xoxe-1-My0xLTEyMzQ1Njc4OTAxMi1hYmNk",
                "xoxe-",
            ),
            (
                "Slack app-level",
                "xapp-1-A0123456789-0123456789012-abcdef0123456789",
                "xapp-configuration-file",
            ),
            ("AWS", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPL"),
            (
                "Discord bot",
                DISCORD,
                "MTEyMzQ1Njc4OTAxMjM0NTY3OA.GaBcDe.short",
            ),
            ("JWT", JWT, "eyJhbGciOiJIUzI1NiJ9.e30"),
            (
                "Google",
                "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
                "AIzawl",
            ),
            ("GitLab", "glpat-Ab1Cd2Ef3Gh4Ij5Kl6Mn", "glpat-short"),
            ("Stripe", "sk_live_0123456789abcdefGHIJKLMN", "sk_live_mode"),
            (
                "Stripe restricted",
                "rk_test_0123456789abcdefGHIJKLMN",
                "rk_test_helpers",
            ),
            (
                "npm",
                "npm_0123456789abcdefghijABCDEFGHIJ0123456789",
                "npm_config_registry",
            ),
            (
                "Hugging Face",
                "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
                "hf_hub_download",
            ),
            (
                "PyPI",
                &format!("pypi-AgEIcHlwaS5vcmc{}", "A1b2C3d4E5".repeat(6)),
                "pypi-server",
            ),
            (
                "private key",
                "-----BEGIN PRIVATE KEY-----\nMIIEvg\n-----END PRIVATE KEY-----",
                "-----BEGIN PUBLIC KEY-----\nMIIBIj\n-----END PUBLIC KEY-----",
            ),
            ("Bearer", "Bearer abc.def.ghi123", "Bearer token"),
        ] {
            let shown = r.redact(&format!("x = \"{token}\";"));
            assert!(
                shown.contains(MASK) && !shown.contains(token),
                "{shape}: {token:?} shown as {shown:?}"
            );
            check(&r, near_miss, near_miss);
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let r = Redactor::default();
        for input in [
            "commit 3f786850e387550fdab836ed7e6dc881de23001b",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "see https://github.com/owner/repo/pull/12 and http://localhost:8080/x@y",
            "the Authorization header is required",
            "use a Bearer token here",
            "task-list disk-usage-report-for-all-users-2024 sk-learn",
            "ghp_short gh_pat AKIA123 AKIAIOSFODNN7EXAMPLEX",
            "std::collections::HashMap.get_mut(key).unwrap_or_default()",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "naïve café 日本語 🚀",
            // Truncated shapes at the very end of the text.
            "Authorization:",
            "Authorization: \n",
            "Bearer",
            "Bearer ",
            "https://",
            "https://user:@host",
            "-----BEGIN ",
            "sk-",
            "ghp_",
        ] {
            check(&r, input, input);
        }
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let r = Redactor::new(["supersecretvalue".to_string()]);
        let shown = format!("{r:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert_eq!(shown, "Redactor { secrets: 1 }");
    }

    #[test]
    fn from_config_takes_every_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[llm]\nmodel = \"m\"\n[discord]\nguild_id = 1\nadmin_users = [2]\n[github]\nowner = \"o\"\nrepo = \"r\"\n",
        )
        .unwrap();
        let env = [
            ("OPENAI_API_KEY", "llm-key-123456"),
            ("DISCORD_TOKEN", "discord-token-123456"),
            ("GITHUB_TOKEN", "github-token-123456"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = Config::load_with_env(&path, true, &env).unwrap();
        let r = Redactor::from_config(&config);
        check(
            &r,
            "llm-key-123456 discord-token-123456 github-token-123456",
            "*** *** ***",
        );
    }

    #[test]
    fn streams_mask_tokens_split_between_pieces() {
        let r = Redactor::new(["configured-secret".to_string()]);
        let pieces = [
            "start configu",
            "red-secret and gh",
            "p_A1b2C3d4E5f6G7h8I9j0",
            "K1l2M3n4O5p6Q7r8\n-----BEGIN EC PRIV",
            "ATE KEY-----\nMHcCAQEE\nIIBAAK\n",
            "more\n-----END EC PRIVATE KEY-----\ntail",
        ];
        let mut stream = r.stream();
        let mut out: String = pieces.iter().map(|p| stream.push(p)).collect();
        out.push_str(&stream.finish());
        assert_eq!(
            out,
            "start *** and ***\n-----BEGIN EC PRIVATE KEY-----***-----END EC PRIVATE KEY-----\ntail"
        );
    }

    /// Fed one character at a time, a word stream releases what redacting the whole gives, and
    /// releases ordinary words before the end.
    #[test]
    fn word_streams_mask_what_the_whole_text_masks() {
        let r = Redactor::new(["configured-secret".to_string()]);
        // Whether words are released before the end: a line with a shape that spans words is
        // held whole.
        for (text, streams) in [
            ("start configured-secret and more words", true),
            (&format!("a {GHP} b {PAT} c {DISCORD} d {JWT}"), true),
            ("curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' https://example.com", true),
            ("Authorization: Bearer abcdef0123456789abcdef and then prose", false),
            ("then bearer 0123456789abcdef0123 words", true),
            ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\nIIBAAK\n-----END EC PRIVATE KEY-----\nok", true),
            ("https://user:hunter2hunter2@example.com/x y", true),
        ] {
            let mut stream = r.words();
            let mut out = String::new();
            let mut released_early = false;
            for c in text.chars() {
                let piece = stream.push(&c.to_string());
                released_early |= !piece.is_empty();
                out.push_str(&piece);
            }
            out.push_str(&stream.finish());
            assert_eq!(out, r.redact(text), "streaming {text:?}");
            assert_eq!(released_early, streams, "streaming {text:?}");
        }
    }

    #[test]
    fn streams_release_long_lines_and_drop_unfinished_keys() {
        let r = Redactor::default();
        let mut stream = r.stream();
        let long = "y".repeat(MAX_PENDING + 1);
        assert_eq!(stream.push(&long), long);
        assert_eq!(
            stream.push("-----BEGIN PRIVATE KEY-----\nsecret\n"),
            "-----BEGIN PRIVATE KEY-----***"
        );
        assert_eq!(stream.push(&"k".repeat(MAX_PENDING * 2)), "");
        assert_eq!(stream.finish(), "");
    }
}
