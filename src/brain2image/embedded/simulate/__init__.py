"""The simulated study: procedural scenes, a simulated subject, and the NSD tree they are written as."""
