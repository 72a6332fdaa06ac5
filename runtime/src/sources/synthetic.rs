//! Synthetic event streams, for benchmarks and tests that need volume: deterministic NDJSON in
//! the same format as a real capture.

use std::fmt::Write;

const ENDPOINTS: [(&str, &str); 10] = [
    ("GET", "/"),
    ("GET", "/items"),
    ("GET", "/items/[id]"),
    ("POST", "/orders"),
    ("GET", "/orders/[id]"),
    ("GET", "/search"),
    ("PUT", "/cart"),
    ("DELETE", "/cart/[id]"),
    ("GET", "/flaky"),
    ("GET", "/health"),
];

/// A stream of `requests` request events spread over `workers` workers, 1,000 requests per
/// second of event time, with test start and stop on every worker; about 2% of requests fail.
pub fn request_stream(workers: usize, requests: usize) -> Vec<u8> {
    let workers = workers.max(1);
    let mut out = String::with_capacity(requests * 260 + workers * 200);
    let start = 1_700_000_000.0_f64;
    for worker in 0..workers {
        let _ = writeln!(
            out,
            r#"{{"event":"test_start","role":"worker","node":"worker-{worker}","time":{start}}}"#
        );
    }
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for index in 0..requests {
        // xorshift: cheap, deterministic.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let worker = index % workers;
        let (method, name) = ENDPOINTS[(state % ENDPOINTS.len() as u64) as usize];
        let time = start + index as f64 / 1_000.0;
        let response_time =
            1.0 + (state >> 20) as f64 % 250.0 + ((state >> 8) % 1000) as f64 / 1000.0;
        let failed = (state >> 32).is_multiple_of(50);
        let (exception, status) = if failed {
            (r#""HTTPError('500 Server Error')""#, 500)
        } else {
            ("null", 200)
        };
        let _ = writeln!(
            out,
            r#"{{"event":"request","role":"worker","node":"worker-{worker}","time":{time:.4},"request_type":"{method}","name":"{name}","response_time":{response_time:.3},"response_length":{length},"exception":{exception},"start_time":{start_time:.4},"url":"http://127.0.0.1:8089{name}","status_code":{status},"context":{{}}}}"#,
            length = 100 + (state >> 40) % 4000,
            start_time = time - response_time / 1000.0,
        );
    }
    let end = start + requests as f64 / 1_000.0 + 0.5;
    for worker in 0..workers {
        let _ = writeln!(
            out,
            r#"{{"event":"test_stop","role":"worker","node":"worker-{worker}","time":{end}}}"#
        );
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_decodes() {
        let stream = request_stream(3, 500);
        let text = String::from_utf8(stream).unwrap();
        let mut requests = 0;
        let mut failures = 0;
        for line in text.lines() {
            let record = crate::sources::ingest::decode_line(line).unwrap();
            if let crate::sources::ingest::EventBody::Request(request) = record.body {
                requests += 1;
                failures += usize::from(request.exception.is_some());
            }
        }
        assert_eq!(requests, 500);
        assert!(failures > 0 && failures < 50, "{failures}");
        assert_eq!(text.lines().count(), 506);
    }
}
