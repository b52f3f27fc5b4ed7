//! How an answer of the Management API to a post or a close is judged: gone, worth another
//! try, refused for good, or a failure of the caller's own. Both ways of posting (the SDK
//! client and the signed post) judge alike.

/// How a failed call is handled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Gone,
    /// Throttled or a server error: worth another try after a pause.
    Transient,
    /// A client error about this request (403 Forbidden, 413 Payload Too Large, …): the
    /// same frame to the same connection would be refused again.
    Rejected,
    /// Anything else (no answer, or the caller's own credentials refused): not retried
    /// here, but a later attempt may succeed, so the caller hears a backend failure.
    Failed,
}

/// Client errors about the caller rather than the request: expired or wrong credentials,
/// a role without `execute-api:ManageConnections`. Every post fails alike until the
/// configuration is fixed, so they must not pass for one connection refusing one frame.
const CALLER_ERRORS: &[&str] = &[
    "AccessDeniedException",
    "ExpiredTokenException",
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
];

/// Sorts a failure by the HTTP status of the answer (none when the call got none) and the
/// error code. The status alone decides where a gateway answers without API Gateway's
/// error type.
pub(crate) fn classify_answer(status: Option<u16>, code: Option<&str>) -> Failure {
    if status == Some(410) || code == Some("GoneException") {
        Failure::Gone
    } else if matches!(status, Some(408 | 429))
        || status.is_some_and(|s| s >= 500)
        || matches!(
            code,
            Some("LimitExceededException" | "ThrottlingException" | "TooManyRequestsException")
        )
    {
        Failure::Transient
    } else if code.is_some_and(|c| CALLER_ERRORS.contains(&c)) {
        Failure::Failed
    } else if status.is_some_and(|s| (400..500).contains(&s)) {
        Failure::Rejected
    } else {
        Failure::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_status_and_code() {
        assert_eq!(classify_answer(Some(410), None), Failure::Gone);
        assert_eq!(
            classify_answer(Some(404), Some("GoneException")),
            Failure::Gone
        );
        for status in [408, 429, 500, 502, 503] {
            assert_eq!(classify_answer(Some(status), None), Failure::Transient);
        }
        assert_eq!(
            classify_answer(Some(400), Some("LimitExceededException")),
            Failure::Transient
        );
        for status in [400, 403, 404, 413] {
            assert_eq!(classify_answer(Some(status), None), Failure::Rejected);
        }
        assert_eq!(
            classify_answer(Some(403), Some("ForbiddenException")),
            Failure::Rejected
        );
        assert_eq!(
            classify_answer(Some(403), Some("AccessDeniedException")),
            Failure::Failed
        );
        assert_eq!(
            classify_answer(Some(403), Some("ExpiredTokenException")),
            Failure::Failed
        );
        // No answer at all: a connection or timeout failure.
        assert_eq!(classify_answer(None, None), Failure::Failed);
    }
}
