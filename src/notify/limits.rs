//! The Discord webhook payload and the one pure function, [`enforce`], that makes any
//! payload fit Discord's documented limits (webhook.mdx / the embed limits table):
//! content 2,000; 10 embeds; per embed title 256, description 4,096, 25 fields, field
//! name 256 and value 1,024, footer 2,048; 6,000 over all embeds' texts together.
//!
//! Lengths are counted in UTF-16 code units, which is how Discord's JavaScript clients
//! count and never less than the number of chars, so a payload within these limits by
//! our count is within them by any count. Cuts fall on char boundaries and end in `…`.

use serde::{Deserialize, Serialize};

pub const CONTENT_MAX: usize = 2_000;
pub const EMBEDS_MAX: usize = 10;
pub const EMBEDS_TOTAL_MAX: usize = 6_000;
pub const FIELDS_MAX: usize = 25;
pub const TITLE_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 4_096;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1_024;
pub const FOOTER_MAX: usize = 2_048;

const ELLIPSIS: char = '…';

/// The JSON body of a webhook execution (only the parts we send).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WebhookPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeds: Vec<Embed>,
    /// Describes the uploaded files of a multipart request (`files[n]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Embed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<u32>,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<Footer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub inline: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Footer {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Image {
    /// `attachment://report.png` for an uploaded file.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Attachment {
    pub id: u32,
    pub filename: String,
}

/// Discord's length of `s` (UTF-16 code units).
pub fn discord_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `s` cut to at most `max` (by [`discord_len`]) on a char boundary, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if discord_len(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let room = max - ELLIPSIS.len_utf16();
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if used + c.len_utf16() > room {
            break;
        }
        used += c.len_utf16();
        end = i + c.len_utf8();
    }
    let mut out = s[..end].to_string();
    out.push(ELLIPSIS);
    out
}

/// The texts of one embed that count toward [`EMBEDS_TOTAL_MAX`].
pub fn embed_len(e: &Embed) -> usize {
    let opt = |s: &Option<String>| s.as_deref().map_or(0, discord_len);
    opt(&e.title)
        + opt(&e.description)
        + e.fields
            .iter()
            .map(|f| discord_len(&f.name) + discord_len(&f.value))
            .sum::<usize>()
        + e.footer.as_ref().map_or(0, |f| discord_len(&f.text))
}

/// The same payload, cut to fit every limit. Order is kept; what falls beyond the shared
/// 6,000 budget is truncated, and fields and embeds that no longer fit are dropped (an
/// empty field name or value is a 400 at Discord).
pub fn enforce(mut p: WebhookPayload) -> WebhookPayload {
    p.content = p
        .content
        .map(|c| truncate(&c, CONTENT_MAX))
        .filter(|c| !c.is_empty());
    p.embeds.truncate(EMBEDS_MAX);
    let mut budget = EMBEDS_TOTAL_MAX;
    let mut embeds = Vec::with_capacity(p.embeds.len());
    for e in p.embeds {
        if budget == 0 {
            break;
        }
        embeds.push(fit_embed(e, &mut budget));
    }
    p.embeds = embeds;
    p
}

/// Cuts `s` to its own limit and what is left of the budget, and charges the budget.
fn take(s: &str, max: usize, budget: &mut usize) -> String {
    let out = truncate(s, max.min(*budget));
    *budget -= discord_len(&out);
    out
}

fn take_opt(s: Option<String>, max: usize, budget: &mut usize) -> Option<String> {
    s.map(|s| take(&s, max, budget)).filter(|s| !s.is_empty())
}

fn fit_embed(mut e: Embed, budget: &mut usize) -> Embed {
    e.title = take_opt(e.title, TITLE_MAX, budget);
    e.description = take_opt(e.description, DESCRIPTION_MAX, budget);
    e.fields.truncate(FIELDS_MAX);
    let mut fields = Vec::with_capacity(e.fields.len());
    for f in e.fields {
        // A field needs at least one unit of name and one of value.
        if *budget < 2 {
            break;
        }
        let name = truncate(&non_empty(f.name), FIELD_NAME_MAX.min(*budget - 1));
        *budget -= discord_len(&name);
        let value = truncate(&non_empty(f.value), FIELD_VALUE_MAX.min(*budget));
        *budget -= discord_len(&value);
        fields.push(Field {
            name,
            value,
            inline: f.inline,
        });
    }
    e.fields = fields;
    e.footer = e
        .footer
        .and_then(|f| take_opt(Some(f.text), FOOTER_MAX, budget).map(|text| Footer { text }));
    e
}

/// Every way `p` breaks Discord's limits (empty when it fits): what tests assert on the
/// payload a webhook received.
pub fn violations(p: &WebhookPayload) -> Vec<String> {
    let mut v = Vec::new();
    let mut over = |what: String, len: usize, max: usize| {
        if len > max {
            v.push(format!("{what}: {len} > {max}"));
        }
    };
    over(
        "content".into(),
        p.content.as_deref().map_or(0, discord_len),
        CONTENT_MAX,
    );
    over("embeds".into(), p.embeds.len(), EMBEDS_MAX);
    over(
        "all embeds".into(),
        p.embeds.iter().map(embed_len).sum(),
        EMBEDS_TOTAL_MAX,
    );
    let len = |s: &Option<String>| s.as_deref().map_or(0, discord_len);
    for (i, e) in p.embeds.iter().enumerate() {
        over(format!("embed {i} title"), len(&e.title), TITLE_MAX);
        over(
            format!("embed {i} description"),
            len(&e.description),
            DESCRIPTION_MAX,
        );
        over(format!("embed {i} fields"), e.fields.len(), FIELDS_MAX);
        for (j, f) in e.fields.iter().enumerate() {
            over(
                format!("embed {i} field {j} name"),
                discord_len(&f.name),
                FIELD_NAME_MAX,
            );
            over(
                format!("embed {i} field {j} value"),
                discord_len(&f.value),
                FIELD_VALUE_MAX,
            );
        }
        let footer = e.footer.as_ref().map_or(0, |f| discord_len(&f.text));
        over(format!("embed {i} footer"), footer, FOOTER_MAX);
    }
    // Not a length limit, but a 400 all the same.
    for (i, e) in p.embeds.iter().enumerate() {
        for (j, f) in e.fields.iter().enumerate() {
            if f.name.is_empty() || f.value.is_empty() {
                v.push(format!("embed {i} field {j} has an empty name or value"));
            }
        }
    }
    v
}

/// Discord refuses empty field texts: an empty one shows a zero-width space instead.
fn non_empty(s: String) -> String {
    if s.is_empty() {
        "\u{200b}".to_string()
    } else {
        s
    }
}
