CREATE TABLE IF NOT EXISTS greetings (
    language text PRIMARY KEY,
    text text NOT NULL
);
INSERT INTO greetings (language, text) VALUES ('en', 'Hello'), ('de', 'Hallo')
ON CONFLICT (language) DO NOTHING;
