//! The S3 door against a fake service on a loopback port: what it is asked, in which order, and
//! how often when it fails.

use std::io::{Read, Write};
use std::sync::Arc;

use rusty_s3::Credentials;

use super::client::ATTEMPTS;
use super::store::parse_endpoint;
use super::*;

/// An S3 service on a loopback port that answers each request with `answer(method, path
/// and query)`, and records what it was asked.
struct FakeService {
    endpoint: String,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

type Answer = (u16, String);

impl FakeService {
    fn start(answer: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> FakeService {
        use std::io::{BufRead, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (log, answer) = (Arc::clone(&asked), Arc::new(answer));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (log, answer) = (Arc::clone(&log), Arc::clone(&answer));
                std::thread::spawn(move || {
                    let mut stream = stream.unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            reader.read_line(&mut header).unwrap();
                            if header.trim().is_empty() {
                                break;
                            }
                            let lower = header.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap().to_string();
                        let target = parts.next().unwrap();
                        // The signature's parameters aside: the path and what is asked.
                        let (path, query) = target.split_once('?').unwrap_or((target, ""));
                        let query: Vec<&str> = query
                            .split('&')
                            .filter(|p| !p.starts_with("X-Amz-"))
                            .collect();
                        let asked = format!("{method} {path}?{}", query.join("&"));
                        let (status, text) = {
                            let mut log = log.lock().unwrap();
                            log.push(asked.clone());
                            let tries = log.iter().filter(|a| **a == asked).count();
                            answer(&asked, tries)
                        };
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\netag: \"e\"\r\n\r\n{text}",
                            text.len()
                        );
                        stream.write_all(reply.as_bytes()).unwrap();
                    }
                });
            }
        });
        FakeService { endpoint, asked }
    }

    fn folder(&self) -> S3Folder {
        let credentials = Credentials::new("k", "s");
        let url = parse_endpoint(&self.endpoint).unwrap();
        let bucket = S3Bucket::new(url, "bucket", "us-east-1", credentials).unwrap();
        S3Folder::new(Arc::new(bucket), "rbd/vm")
    }

    fn asked(&self, what: &str) -> usize {
        let asked = self.asked.lock().unwrap();
        asked.iter().filter(|a| a.starts_with(what)).count()
    }
}

/// The service's answers to an upload of `rbd/vm/f`: `part` answers its part.
fn upload_answers(part: fn(usize) -> u16) -> impl Fn(&str, usize) -> Answer {
    move |asked, tries| match asked {
        a if a.starts_with("POST /bucket/rbd/vm/f?uploads") => (
            200,
            "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Bucket>bucket</Bucket><Key>rbd/vm/f</Key>\
             <UploadId>id-1</UploadId></InitiateMultipartUploadResult>"
                .into(),
        ),
        a if a.starts_with("PUT /bucket/rbd/vm/f?partNumber=1") => (part(tries), String::new()),
        a if a.starts_with("HEAD /bucket/rbd/vm/f?") => (404, String::new()),
        a if a.starts_with("GET /bucket/?") => (
            200,
            "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Name>bucket</Name><KeyCount>0</KeyCount></ListBucketResult>"
                .into(),
        ),
        a if a.starts_with("POST /bucket/rbd/vm/f?uploadId") => {
            (200, "<CompleteMultipartUploadResult/>".into())
        }
        _ => (200, String::new()),
    }
}

/// Stages, writes and publishes `rbd/vm/f` through `folder`.
fn upload(folder: &S3Folder) -> Result<Published> {
    let Some(Staged::Stream(mut stream)) = folder.stage("f")? else {
        panic!("an S3 folder stages streams");
    };
    stream.write_all(b"twenty bytes of data")?;
    folder.publish(Staged::Stream(stream), "0123", false)
}

#[test]
fn a_part_the_service_fails_once_is_sent_again_and_the_file_published() {
    let service = FakeService::start(upload_answers(|tries| match tries {
        1 => 503,
        _ => 200,
    }));
    let published = upload(&service.folder()).unwrap();
    assert_eq!(published.size, 20);
    assert_eq!(service.asked("PUT /bucket/rbd/vm/f?partNumber=1"), 2);
    // The checksum object before the upload was completed.
    let asked = service.asked.lock().unwrap().clone();
    let checksum = asked
        .iter()
        .position(|a| a.starts_with("PUT /bucket/rbd/vm/f.sha256"));
    let complete = asked
        .iter()
        .position(|a| a.starts_with("POST /bucket/rbd/vm/f?uploadId"));
    assert!(checksum.unwrap() < complete.unwrap(), "{asked:?}");
}

#[test]
fn a_refused_part_is_not_sent_again_and_its_upload_is_aborted() {
    let service = FakeService::start(upload_answers(|_| 403));
    let err = upload(&service.folder()).unwrap_err();
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    assert_eq!(service.asked("PUT /bucket/rbd/vm/f?partNumber=1"), 1);
    assert_eq!(service.asked("DELETE /bucket/rbd/vm/f?uploadId"), 1);
    // Nothing was published: not even the checksum went.
    assert_eq!(service.asked("PUT /bucket/rbd/vm/f.sha256"), 0);
}

#[test]
fn a_service_failing_every_try_gives_up_after_a_bounded_number() {
    let service = FakeService::start(upload_answers(|_| 500));
    assert!(upload(&service.folder()).is_err());
    assert_eq!(
        service.asked("PUT /bucket/rbd/vm/f?partNumber=1"),
        ATTEMPTS as usize
    );
}
