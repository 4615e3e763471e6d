FROM later
FROM reg.example/a:1 AS later
