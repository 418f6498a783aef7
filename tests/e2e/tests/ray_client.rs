//! The host's Ray dashboard client against a real Ray head (Ray 2.60.0 from PyPI, started
//! by `wasmray_e2e::ray`): submit, get, logs, failures, duplicate ids, stop, delete,
//! unknown ids and unreachable addresses.

use std::time::{Duration, Instant};

use wasmray::ray::{
    DashboardAddress, DashboardClient, JobDetails, JobSubmission, RayError, SubmitOutcome,
};
use wasmray_e2e::ray::{RayHead, head, token_head};

fn ray() -> &'static RayHead {
    head(&std::env::temp_dir()).unwrap()
}

fn client() -> DashboardClient {
    DashboardClient::new(Duration::from_secs(10))
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn until_terminal(client: &DashboardClient, at: &DashboardAddress, id: &str) -> JobDetails {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = client.job(at, id).await.unwrap();
        if job.is_terminal() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {} after 60 s",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_job_runs_to_success_and_its_logs_hold_its_output() {
    let ray = ray();
    let (client, at) = (client(), DashboardAddress::new(ray.dashboard_url()));
    let version = client.version(&at).await.unwrap();
    assert_eq!(version.ray_version, "2.60.0");

    let id = unique("ok");
    let job = JobSubmission {
        entrypoint: ray.python_entrypoint("print(\"hello from wasmray\")"),
        submission_id: id.clone(),
        metadata: [("owner".to_owned(), "e2e".to_owned())].into(),
        runtime_env: Some(serde_json::json!({"env_vars": {"WASMRAY_TEST": "1"}})),
        ..JobSubmission::default()
    };
    assert_eq!(
        client.submit_job(&at, &job).await.unwrap(),
        SubmitOutcome::Submitted {
            submission_id: id.clone()
        }
    );
    let done = until_terminal(&client, &at, &id).await;
    assert_eq!(done.status, "SUCCEEDED", "{done:?}");
    assert_eq!(done.submission_id.as_deref(), Some(id.as_str()));
    assert_eq!(done.metadata.unwrap_or_default()["owner"], "e2e");
    assert!(done.start_time.is_some() && done.end_time >= done.start_time);
    let logs = client.job_logs(&at, &id).await.unwrap();
    assert!(logs.contains("hello from wasmray"), "{logs}");
    assert!(
        client
            .list_jobs(&at)
            .await
            .unwrap()
            .iter()
            .any(|job| job.submission_id.as_deref() == Some(id.as_str()))
    );

    // The same id again: Ray refuses it, and the client recognises that as submitted.
    match client.submit_job(&at, &job).await.unwrap() {
        SubmitOutcome::AlreadySubmitted { message } => {
            assert!(message.contains("already exists"), "{message}")
        }
        other => panic!("a duplicate id was accepted: {other:?}"),
    }

    // Stopping an ended job stops nothing; deleting it removes it.
    assert!(!client.stop_job(&at, &id).await.unwrap());
    assert!(client.delete_job(&at, &id).await.unwrap());
    assert!(client.job(&at, &id).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn a_failing_job_reports_rays_message() {
    let ray = ray();
    let (client, at) = (client(), DashboardAddress::new(ray.dashboard_url()));
    let id = unique("fail");
    let job = JobSubmission {
        entrypoint: ray.python_entrypoint("import sys; print(\"about to fail\"); sys.exit(3)"),
        submission_id: id.clone(),
        ..JobSubmission::default()
    };
    client.submit_job(&at, &job).await.unwrap();
    let done = until_terminal(&client, &at, &id).await;
    assert_eq!(done.status, "FAILED");
    assert_eq!(
        done.error_type.as_deref(),
        Some("JOB_ENTRYPOINT_COMMAND_ERROR")
    );
    assert_eq!(done.driver_exit_code, Some(3));
    let message = done.message.unwrap_or_default();
    assert!(
        message.contains("exit code 3") || message.contains("about to fail"),
        "{message}"
    );
}

#[tokio::test]
async fn a_running_job_stops_and_cannot_be_deleted_while_running() {
    let ray = ray();
    let (client, at) = (client(), DashboardAddress::new(ray.dashboard_url()));
    let id = unique("long");
    let job = JobSubmission {
        entrypoint: ray.python_entrypoint("import time; time.sleep(120)"),
        submission_id: id.clone(),
        ..JobSubmission::default()
    };
    client.submit_job(&at, &job).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.job(&at, &id).await.unwrap().status != "RUNNING" {
        assert!(Instant::now() < deadline, "job never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match client.delete_job(&at, &id).await {
        Err(RayError::Status {
            status: 500, body, ..
        }) => {
            assert!(body.contains("non-terminal"), "{body}")
        }
        other => panic!("deleting a running job: {other:?}"),
    }
    assert!(client.stop_job(&at, &id).await.unwrap());
    let done = until_terminal(&client, &at, &id).await;
    assert_eq!(done.status, "STOPPED");
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let ray = ray();
    let (client, at) = (client(), DashboardAddress::new(ray.dashboard_url()));
    let error = client.job(&at, "no-such-job").await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("Ray answered 404 to GET /api/jobs/no-such-job"),
        "{error}"
    );
    assert!(
        client
            .stop_job(&at, "no-such-job")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        client
            .delete_job(&at, "no-such-job")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        client
            .job_logs(&at, "no-such-job")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn an_unreachable_dashboard_is_a_clear_error() {
    // A port nobody listens on: bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = DashboardAddress::new(format!("http://127.0.0.1:{port}"));
    let error = client().version(&at).await.unwrap_err();
    assert!(matches!(error, RayError::Unreachable { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("refused"),
        "{text}"
    );

    let bad = DashboardAddress::new("https://127.0.0.1:1");
    assert!(matches!(
        client().version(&bad).await.unwrap_err(),
        RayError::InvalidAddress { .. }
    ));
}

#[tokio::test]
async fn a_dashboard_that_does_not_answer_times_out() {
    // Accepts connections but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let at = DashboardAddress::new(format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    let error = DashboardClient::new(Duration::from_millis(300))
        .version(&at)
        .await
        .unwrap_err();
    assert!(matches!(error, RayError::Timeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[tokio::test]
async fn token_auth_sends_the_clusters_token() {
    let ray = token_head(&std::env::temp_dir()).unwrap();
    let client = client();
    let anonymous = DashboardAddress::new(ray.dashboard_url());
    match client.version(&anonymous).await {
        Err(RayError::Status { status: 401, .. }) => {}
        other => panic!("Ray with token auth answered a call without the token: {other:?}"),
    }
    let wrong = anonymous.clone().with_token(Some("0".repeat(64)));
    match client.version(&wrong).await {
        Err(RayError::Status { status: 403, .. }) => {}
        other => panic!("Ray with token auth took a wrong token: {other:?}"),
    }
    let authenticated = anonymous.with_token(ray.token().map(str::to_owned));
    assert_eq!(
        client.version(&authenticated).await.unwrap().ray_version,
        "2.60.0"
    );
    let error = client.job(&authenticated, "no-such-job").await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
}
