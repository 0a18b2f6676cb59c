-- A monitor's baseline (every round is compared with it) and its migration label.
ALTER TABLE monitors ADD COLUMN against TEXT;
ALTER TABLE monitors ADD COLUMN migration TEXT;
