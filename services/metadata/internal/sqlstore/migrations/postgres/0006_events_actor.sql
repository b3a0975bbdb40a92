-- Who made each event happen (a token's name or a certificate's subject)
-- and the service that acted for them, for the event stream.
ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN via TEXT NOT NULL DEFAULT '';
