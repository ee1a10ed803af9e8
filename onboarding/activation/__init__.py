"""The buyer's activation: invitations, the flow's steps, support requests, the buyer's pages, their
scheduled jobs."""
