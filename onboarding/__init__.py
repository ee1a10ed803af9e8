"""Connected-services onboarding: orders in, invitations out, brand IDs and activation."""
