-- Dispatcher processes that are alive, so each can take a fair share of the trigger cursors.
CREATE TABLE dispatchers (
    owner        TEXT   PRIMARY KEY,
    alive_until  BIGINT NOT NULL
);
