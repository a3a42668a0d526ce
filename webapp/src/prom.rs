//! The Prometheus text format, as the video exporter writes it: one sample
//! per line, `name{label="value",...} value`.

use std::collections::BTreeMap;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (a counter's `_total` suffix removed).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A label's value ("" when absent).
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parses the text; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut end = None;
        loop {
            // key
            while chars.peek().is_some_and(|(_, c)| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut val = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => val.push('\n'),
                        Some(o) => val.push(o),
                        None => return None,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    o => val.push(o),
                }
            }
            if !closed {
                return None;
            }
            labels.insert(key.trim().to_string(), val);
        }
        rest = &r[end? + 1..];
    }
    let value: f64 = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.strip_suffix("_total").unwrap_or(name).to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exporters_text() {
        let text = "# HELP flypack_srt_rtt_ms Round-trip time.\n# TYPE flypack_srt_rtt_ms gauge\n\
                    flypack_srt_rtt_ms{stream=\"cam1\"} 12.5\n\
                    flypack_srt_packets_lost_total{stream=\"cam1\",direction=\"recv\"} 3\n\
                    flypack_udp_in_errors_total 7\n\
                    weird{a=\"x\\\"y,z\"} 1e3\n\
                    broken{a=\"x} 1\n# EOF\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "flypack_srt_rtt_ms");
        assert_eq!(s[0].label("stream"), "cam1");
        assert_eq!(s[0].value, 12.5);
        assert_eq!(s[1].name, "flypack_srt_packets_lost");
        assert_eq!(s[1].label("direction"), "recv");
        assert_eq!(s[2].name, "flypack_udp_in_errors");
        assert!(s[2].labels.is_empty());
        assert_eq!(s[3].label("a"), "x\"y,z");
        assert_eq!(s[3].value, 1000.0);
    }
}
