//! Audit-trail events: redaction of request bodies and the event shape.
