//! PingSource: CloudEvents on a cron schedule.
