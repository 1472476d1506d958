-- Subscribe notifications' results, as WeChat pushed them (subscribe_msg_sent_event), by the
-- msgid bizsend answered. msgid is kept as its decimal text: WeChat's ids are unsigned 64-bit.
CREATE TABLE wxsub_notification_results (
    appid TEXT NOT NULL,
    msgid TEXT NOT NULL,
    openid TEXT NOT NULL,
    template_id TEXT NOT NULL,
    error_code BIGINT NOT NULL,
    error_status TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (appid, msgid)
);
