"""HTTP plumbing only: the request's database session and admission, problem details, CSRF and
forms, rendering."""
